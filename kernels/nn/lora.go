package nn

import (
	"fmt"
	"slices"
	"sync"

	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// LoRA is a low-rank update kept beside the weight it updates instead of
// merged into it: the layer computes W·x + Scale·Up·(Down·x), as PEFT does
// at inference. The compiler merges LoRAs (one matmul per layer, no extra
// weights); the unmerged form is the reference the evaluation compares the
// merged, fp16 bundle against.
type LoRA struct {
	// Target is the weight updated, e.g. "mid_block.attentions.0.proj_in.weight".
	Target string
	// Down and Up name tensors of the LoRA source: Down [r, in] (a conv's
	// [r, in, kh, kw]) and Up [out, r] (or [out, r, 1, 1]).
	Down, Up string
	// Scale is the user's scale times alpha / rank.
	Scale float64
}

// LoRAs is a set of unmerged LoRAs and the source of their tensors.
type LoRAs struct {
	Source Source
	List   []LoRA
}

// loraSet is the unmerged LoRAs of one model's Weights.
type loraSet struct {
	w        *Weights // the LoRA tensors, on the same backend
	byTarget map[string][]LoRA

	mu   sync.Mutex
	used map[string]bool
}

// WithLoRAs applies l unmerged in every Linear and Conv2D whose weight one
// of them targets (several may target one weight; they add up). It
// returns w.
func (w *Weights) WithLoRAs(l LoRAs) *Weights {
	lw := NewWeights(w.backend, l.Source, w.precision).WithLowering(w.lowering)
	lw.loraOf = w
	set := &loraSet{
		w:        lw,
		byTarget: map[string][]LoRA{},
		used:     map[string]bool{},
	}
	for _, x := range l.List {
		set.byTarget[x.Target] = append(set.byTarget[x.Target], x)
	}
	w.lora = set
	return w
}

// UnusedLoRAs lists, sorted, the LoRA targets no traced layer has applied:
// after tracing a whole model it must be empty, or the model would differ
// from the merged one without saying so.
func (w *Weights) UnusedLoRAs() []string {
	if w.lora == nil {
		return nil
	}
	w.lora.mu.Lock()
	defer w.lora.mu.Unlock()
	var out []string
	for t := range w.lora.byTarget {
		if !w.lora.used[t] {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// boundLoRA is one LoRA's tensors as graph nodes.
type boundLoRA struct {
	down, up *Node
	scale    float64
}

// hasLoRA reports whether unmerged LoRAs target the weight, without
// binding them.
func (s Scope) hasLoRA(name string) bool {
	return s.w.lora != nil && len(s.w.lora.byTarget[s.prefix+name]) > 0
}

// loras binds the unmerged LoRAs of the weight name in this scope: Down in
// downLayout (InOut for a Linear, HWIO for a convolution), Up as [r, out].
func (s Scope) loras(name string, downLayout Layout) []boundLoRA {
	set := s.w.lora
	if set == nil {
		return nil
	}
	target := s.prefix + name
	list := set.byTarget[target]
	if len(list) == 0 {
		return nil
	}
	set.mu.Lock()
	set.used[target] = true
	set.mu.Unlock()
	root := Scope{b: s.b, w: set.w}
	out := make([]boundLoRA, len(list))
	for i, l := range list {
		out[i] = boundLoRA{down: root.Weight(l.Down, downLayout), up: root.Weight(l.Up, InOut), scale: l.Scale}
		if r, ru := out[i].down.Shape().Dimensions, out[i].up.Shape().Dimensions; r[len(r)-1] != ru[0] {
			panic(fmt.Errorf("LoRA on %s: down %s has rank %d, up %s has %d", target, l.Down, r[len(r)-1], l.Up, ru[0]))
		}
	}
	return out
}
