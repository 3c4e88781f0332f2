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
