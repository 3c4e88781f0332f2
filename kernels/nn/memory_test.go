package nn

import (
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
)

// Hand-computed: a = exp(x), b = -a, c = a + b, d = 2c: a and b live until
// c is made (3 × 4000 bytes at once), then d replaces them; x, the
// parameter, is not counted, and a dead branch never is.
func TestTemporaryBytes(t *testing.T) {
	b, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWeights(b, RandomSource{}, Widen)
	p, err := Compile("temps", w, []shapes.Shape{shapes.Make(dtypes.Float32, 1000)}, func(s Scope, in []*Node) []*Node {
		a := Exp(in[0])
		_ = Mul(Exp(in[0]), Exp(in[0])) // never used: the backend skips it
		c := Add(a, Neg(a))
		return []*Node{MulScalar(c, 2)}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.TemporaryBytes(); got != 12000 {
		t.Errorf("TemporaryBytes = %d, want 12000", got)
	}
}

// Loading a rearranged weight leaves a scratch buffer; DropScratch frees
// it and a later load still works.
func TestDropScratch(t *testing.T) {
	b, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWeights(b, RandomSource{Shapes: map[string][]int{"weight": {8, 4, 3, 3}}, Seed: 1}, Widen)
	build := func(s Scope, in []*Node) []*Node { return []*Node{Conv2D(s, in[0], 1, Same(3))} }
	in := []shapes.Shape{shapes.Make(dtypes.Float32, 1, 5, 5, 4)}
	p, err := Compile("conv", w, in, build)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if len(w.scratch) == 0 {
		t.Fatal("no scratch after loading an HWIO weight")
	}
	w.DropScratch()
	if w.scratch != nil {
		t.Error("scratch kept after DropScratch")
	}
	w2 := NewWeights(b, RandomSource{Shapes: map[string][]int{"weight": {8, 4, 3, 3}}, Seed: 2}, Widen)
	w2.DropScratch() // before any load: nothing to drop
	if p, err = Compile("conv2", w2, in, build); err != nil {
		t.Fatal(err)
	}
	p.Close()
}
