package hlo_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/hlo"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// shapeOnly has shapes and no bytes: a trace that read a weight would
// fail on it.
type shapeOnly map[string][]int

func (s shapeOnly) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	sh, ok := s[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("no tensor %q", name)
	}
	return safetensors.F16, sh, nil, nil
}

func (s shapeOnly) Has(name string) bool { _, ok := s[name]; return ok }

var block = shapeOnly{
	"conv.weight": {8, 4, 3, 3}, "conv.bias": {8},
	"norm.weight": {8}, "norm.bias": {8},
	"proj.weight": {16, 8}, "proj.bias": {16},
}

func traceBlock(t *testing.T, precision nn.Precision) (*nn.Program, *nn.Weights, string) {
	t.Helper()
	w := nn.NewWeights(hlo.New(), block, precision)
	p, err := nn.Compile("block", w, []shapes.Shape{shapes.Make(dtypes.Float32, 2, 6, 6, 4)}, func(s nn.Scope, in []*Node) []*Node {
		x := nn.Conv2D(s.In("conv"), in[0], 1, nn.Same(3))
		x = nn.SiLU(nn.GroupNorm(s.In("norm"), x, 2, 1e-5))
		x = Reshape(x, 2, 36, 8)
		x = nn.Attention(x, x, x, 2, nil)
		return []*Node{nn.GELU(nn.Linear(s.In("proj"), x))}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	text, ok := p.StableHLO()
	if !ok {
		t.Fatal("no StableHLO from the export backend")
	}
	return p, w, string(text)
}

// A block of the kernels' layers traces to StableHLO whose parameters are
// the input and the weights as the device holds them: fp16 kept as stored
// (converted inside), layouts applied (Linear [in, out], conv HWIO), and
// no weight byte is read.
func TestTraceBlock(t *testing.T) {
	p, w, text := traceBlock(t, nn.KeepStored)
	sig := regexp.MustCompile(`func\.func @main\((.*?)\) -> \(?tensor<([^>]*)>`).FindStringSubmatch(text)
	if sig == nil {
		t.Fatalf("no main signature:\n%.500s", text)
	}
	var params []string
	for _, m := range regexp.MustCompile(`: tensor<([^>]*)>`).FindAllStringSubmatch(sig[1], -1) {
		params = append(params, m[1])
	}
	want := []string{"2x6x6x4xf32", "3x3x4x8xf16", "8xf16", "8xf16", "8xf16", "8x16xf16", "16xf16"}
	if strings.Join(params, " ") != strings.Join(want, " ") {
		t.Errorf("parameters %v, want %v", params, want)
	}
	if sig[2] != "2x36x16xf32" {
		t.Errorf("output tensor<%s>, want 2x36x16xf32", sig[2])
	}
	for _, op := range []string{"stablehlo.convolution", "stablehlo.dot_general", "stablehlo.reduce", "stablehlo.exponential", "chlo.erf", "stablehlo.convert", "stablehlo.broadcast_in_dim"} {
		if !strings.Contains(text, op) {
			t.Errorf("program has no %s", op)
		}
	}
	if p.NumWeights() != len(want)-1 || w.Bytes() != 0 || len(w.Used()) != len(block) {
		t.Errorf("weights: %d bound, %d bytes held, %d used", p.NumWeights(), w.Bytes(), len(w.Used()))
	}
	if _, err := p.Run(tensors.FromShape(shapes.Make(dtypes.Float32, 2, 6, 6, 4))); !errors.Is(err, nn.ErrTraced) {
		t.Errorf("Run on a traced program: %v, want ErrTraced", err)
	}

	// Widened weights are float32 parameters; the trace is otherwise the
	// same and is deterministic.
	_, _, widened := traceBlock(t, nn.Widen)
	if strings.Contains(widened, "xf16>") {
		t.Error("Widen traced fp16 parameters")
	}
	if _, _, again := traceBlock(t, nn.KeepStored); again != text {
		t.Error("two traces of one block differ")
	}
}

// An op the exporter lacks fails the trace with ErrNotImplemented naming
// it, instead of writing a partial program.
func TestUnsupportedOp(t *testing.T) {
	w := nn.NewWeights(hlo.New(), shapeOnly{}, nn.KeepStored)
	_, err := nn.Compile("argmax", w, []shapes.Shape{shapes.Make(dtypes.Float32, 3, 5)}, func(s nn.Scope, in []*Node) []*Node {
		return []*Node{ArgMax(in[0], -1)}
	})
	if !errors.Is(err, compute.ErrNotImplemented) || !strings.Contains(err.Error(), "ArgMinMax") {
		t.Errorf("error %v, want ErrNotImplemented for ArgMinMax", err)
	}
}

// compute's implicit broadcasting (scalars, size-1 axes) becomes explicit
// broadcast_in_dim, which StableHLO requires.
func TestBroadcasting(t *testing.T) {
	w := nn.NewWeights(hlo.New(), shapeOnly{}, nn.KeepStored)
	p, err := nn.Compile("bcast", w, []shapes.Shape{shapes.Make(dtypes.Float32, 3, 1), shapes.Make(dtypes.Float32, 1, 4)}, func(s nn.Scope, in []*Node) []*Node {
		return []*Node{Add(in[0], in[1]), Where(GreaterThan(in[0], ScalarZero(in[0].Graph(), dtypes.Float32)), in[0], Scalar(in[0].Graph(), dtypes.Float32, 1))}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	text, _ := p.StableHLO()
	if !strings.Contains(string(text), "-> (tensor<3x4xf32>, tensor<3x1xf32>)") {
		t.Errorf("outputs:\n%s", text)
	}
}
