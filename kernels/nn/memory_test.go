package nn

import (
	"runtime"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// compileTemps compiles build over inputs of the given float32 shapes on a
// fresh Go backend, closed when the test ends.
func compileTemps(t *testing.T, name string, build BuildFunc, dims ...[]int) *Program {
	t.Helper()
	b := goBackend(t)
	in := make([]shapes.Shape, len(dims))
	for i, d := range dims {
		in[i] = shapes.Make(dtypes.Float32, d...)
	}
	p, err := Compile(name, NewWeights(b, RandomSource{}, Widen), in, build)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Hand-computed: a = exp(x) (4000 bytes), b = -a (a is still needed: 4000
// more), c = a + b writes into b's buffer, d = 2c into c's: 8000 bytes at
// most. x, the parameter, is not counted, and a dead branch never is.
func TestTemporaryBytes(t *testing.T) {
	p := compileTemps(t, "temps", func(s Scope, in []*Node) []*Node {
		a := Exp(in[0])
		_ = Mul(Exp(in[0]), Exp(in[0])) // never used: the backend skips it
		c := Add(a, Neg(a))
		return []*Node{MulScalar(c, 2)}
	}, []int{1000})
	if got := p.TemporaryBytes(); got != 8000 {
		t.Errorf("TemporaryBytes = %d, want 8000", got)
	}
}

// A broadcast feeding only elementwise ops of its rank is fused into them
// by the backend: it costs nothing, and its input lives until those ops
// have run. exp(x) [1000, 8] (32000 bytes) · broadcast(-y [1000, 1]) (4000
// bytes, alive until the product) writes into exp(x)'s buffer: 36000
// bytes at most.
func TestTemporaryBytesFusedBroadcast(t *testing.T) {
	p := compileTemps(t, "broadcast", func(s Scope, in []*Node) []*Node {
		scale := BroadcastToDims(Neg(in[1]), 1000, 8)
		if scale.Type() != NodeTypeBroadcastInDim {
			t.Fatalf("BroadcastToDims made a %s node", scale.Type())
		}
		return []*Node{ReduceAllSum(Mul(Exp(in[0]), scale))}
	}, []int{1000, 8}, []int{1000, 1})
	if got := p.TemporaryBytes(); got != 36000 {
		t.Errorf("TemporaryBytes = %d, want 36000", got)
	}
}

// The estimate's premise, checked on the backend itself: a chain of
// elementwise ops whose inputs die with them allocates one buffer, which
// the estimate counts once (a backend that copied would need two buffers
// alternating, even with its pool). A program that only sums its input
// measures what a run allocates besides (the input's upload).
func TestInPlaceChainAllocatesOnce(t *testing.T) {
	const n = 1 << 20 // 4 MiB of float32, far above the rest of a run's allocations
	chain := compileTemps(t, "chain", func(s Scope, in []*Node) []*Node {
		y := Abs(in[0])
		y = Sqrt(y)
		y = Neg(y)
		y = Exp(y)
		y = MulScalar(y, 3)
		return []*Node{ReduceAllSum(Tanh(y))}
	}, []int{n})
	sum := compileTemps(t, "sum", func(s Scope, in []*Node) []*Node { return []*Node{ReduceAllSum(in[0])} }, []int{n})
	if got := chain.TemporaryBytes(); got != 4*n+4 { // and the scalar sum
		t.Errorf("TemporaryBytes = %d, want %d", got, 4*n+4)
	}
	allocated := func(p *Program) uint64 {
		x := tensors.FromValue(make([]float32, n))
		// Two collections empty the backend's buffer pools, so every
		// buffer the run needs is a fresh allocation.
		runtime.GC()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := p.Run(x); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	base, got := allocated(sum), allocated(chain)
	if extra := int64(got) - int64(base); extra < 4*n || extra >= 2*4*n {
		t.Errorf("the chain allocated %d bytes beyond the upload, want one %d-byte buffer", extra, 4*n)
	}
}

// Loading a rearranged weight leaves a scratch buffer; DropScratch frees
// it and a later load still works.
func TestDropScratch(t *testing.T) {
	b := goBackend(t)
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
