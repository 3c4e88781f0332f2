package nn

import (
	"github.com/gomlx/gomlx/core/graph"
)

// peakTemporaries estimates the most memory a program's intermediate
// values hold at once when its ops run one at a time in creation order (the
// shipped Go backend's schedule, GoBackendConfig): every op's output is
// allocated when it runs and freed after its last consumer; parameters and
// constants are not counted (they are the weights and inputs). The caller
// sizes the garbage collector's headroom with it (internal/memlimit).
func peakTemporaries(nodes, outputs []*graph.Node) int64 {
	reachable := make(map[*graph.Node]bool, len(nodes))
	stack := append([]*graph.Node(nil), outputs...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reachable[n] {
			continue
		}
		reachable[n] = true
		stack = append(stack, n.Inputs()...)
	}
	isOutput := make(map[*graph.Node]bool, len(outputs))
	for _, o := range outputs {
		isOutput[o] = true
	}
	uses := make(map[*graph.Node]int, len(nodes))
	for _, n := range nodes {
		if reachable[n] {
			for _, in := range n.Inputs() {
				uses[in]++
			}
		}
	}
	stored := func(n *graph.Node) bool {
		t := n.Type()
		return t == graph.NodeTypeParameter || t == graph.NodeTypeConstant
	}
	var cur, peak int64
	for _, n := range nodes {
		if !reachable[n] || stored(n) {
			continue
		}
		cur += int64(n.Shape().Memory())
		peak = max(peak, cur)
		for _, in := range n.Inputs() {
			uses[in]--
			if uses[in] == 0 && !stored(in) && !isOutput[in] {
				cur -= int64(in.Shape().Memory())
			}
		}
	}
	return peak
}
