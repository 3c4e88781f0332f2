package nn

import (
	"slices"

	"github.com/gomlx/gomlx/core/graph"
)

// peakTemporaries estimates the most memory a program's intermediate
// values hold at once when its ops run one at a time in creation order (the
// shipped Go backend's schedule, GoBackendConfig): every op's output is
// allocated when it runs and freed after its last consumer; parameters and
// constants are not counted (they are the weights and inputs). The caller
// sizes the garbage collector's headroom with it (internal/memlimit), so it
// follows what the Go backend really allocates rather than an upper bound:
// an elementwise op, a reshape or an identity whose input dies with it
// writes into that input's buffer (gobackend's "owned" inputs), and a
// broadcast that only feeds elementwise ops of its rank is never
// materialized (gobackend fuses it into them as an implicit broadcast).
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
	consumers := make(map[*graph.Node][]*graph.Node, len(nodes))
	for _, n := range nodes {
		if reachable[n] {
			for _, in := range n.Inputs() {
				uses[in]++
				consumers[in] = append(consumers[in], n)
			}
		}
	}
	fused := make(map[*graph.Node]bool)
	for n, cs := range consumers {
		if n.Type() != graph.NodeTypeBroadcastInDim || isOutput[n] {
			continue
		}
		fused[n] = !slices.ContainsFunc(cs, func(c *graph.Node) bool {
			return !elementwise(c.Type()) || c.Shape().Rank() != n.Shape().Rank()
		})
	}
	// held is the memory each live value holds; zero for values that
	// cost nothing (stored, fused) or that share a buffer already counted.
	held := make(map[*graph.Node]int64, len(nodes))
	var cur, peak int64
	// release counts one use of n done, and frees n after its last.
	var release func(n *graph.Node)
	release = func(n *graph.Node) {
		uses[n]--
		if uses[n] > 0 || isOutput[n] {
			return
		}
		cur -= held[n]
		delete(held, n)
		if fused[n] {
			for _, in := range n.Inputs() {
				release(in)
			}
		}
	}
	for _, n := range nodes {
		t := n.Type()
		if !reachable[n] || t == graph.NodeTypeParameter || t == graph.NodeTypeConstant {
			continue
		}
		size := int64(n.Shape().Memory())
		if fused[n] {
			// Its consumers read its input directly: the input lives
			// until the broadcast's last consumer has run (release).
			held[n] = 0
			continue
		}
		if in := reusedInput(n, uses, held, isOutput); in != nil {
			// The output takes over the input's buffer: nothing new is
			// allocated, and the input's bytes move to n.
			size = held[in]
			held[in] = 0
			held[n] = size
		} else {
			held[n] = size
			cur += size
			peak = max(peak, cur)
		}
		for _, in := range n.Inputs() {
			release(in)
		}
	}
	return peak
}

// reusedInput is the input whose buffer the Go backend writes n's output
// into, or nil: an input at its last use (no other consumer, not a program
// output) that owns a buffer of n's shape. Binary ops try the right
// operand first, as gobackend does.
func reusedInput(n *graph.Node, uses map[*graph.Node]int, held map[*graph.Node]int64, isOutput map[*graph.Node]bool) *graph.Node {
	ins := n.Inputs()
	owned := func(in *graph.Node) bool {
		return uses[in] == 1 && !isOutput[in] && held[in] > 0
	}
	switch t := n.Type(); {
	case t == graph.NodeTypeReshape || t == graph.NodeTypeIdentity || unaryInPlace[t]:
		if len(ins) == 1 && owned(ins[0]) && ins[0].DType() == n.DType() {
			return ins[0]
		}
	case binaryInPlace[t]:
		for _, i := range []int{1, 0} {
			if i < len(ins) && owned(ins[i]) && ins[i].Shape().Equal(n.Shape()) {
				return ins[i]
			}
		}
	}
	return nil
}

func elementwise(t graph.NodeType) bool { return unaryInPlace[t] || binaryInPlace[t] }

// unaryInPlace and binaryInPlace are the Go backend's ops that write into
// an owned input's buffer (compute/internal/gobackend/ops: unaryops.go,
// gen_exec_binary.go).
var (
	unaryInPlace = map[graph.NodeType]bool{
		graph.NodeTypeAbs: true, graph.NodeTypeCeil: true, graph.NodeTypeCos: true, graph.NodeTypeErf: true,
		graph.NodeTypeExp: true, graph.NodeTypeExpm1: true, graph.NodeTypeFloor: true, graph.NodeTypeLog: true,
		graph.NodeTypeLog1p: true, graph.NodeTypeLogistic: true, graph.NodeTypeNeg: true, graph.NodeTypeRound: true,
		graph.NodeTypeRsqrt: true, graph.NodeTypeSign: true, graph.NodeTypeSin: true, graph.NodeTypeSqrt: true,
		graph.NodeTypeTanh: true,
	}
	binaryInPlace = map[graph.NodeType]bool{
		graph.NodeTypeAdd: true, graph.NodeTypeSub: true, graph.NodeTypeMul: true, graph.NodeTypeDiv: true,
		graph.NodeTypeMax: true, graph.NodeTypeMin: true, graph.NodeTypePow: true, graph.NodeTypeRem: true,
		graph.NodeTypeAtan2: true,
	}
)
