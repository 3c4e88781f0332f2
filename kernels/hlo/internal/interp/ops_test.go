package interp_test

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/hlo"
	"github.com/controlfn/controlfn/kernels/hlo/internal/interp"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
	"github.com/gomlx/gomlx/core/tensors"
)

// noWeights is a source for programs that bind no weight.
type noWeights struct{}

func (noWeights) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	return "", nil, nil, errors.New("no weight " + name)
}
func (noWeights) Has(string) bool { return false }

// Every op the exporter implements (kernels/hlo supportedOps), including
// the forms the tiny model does not reach (interior and negative padding,
// strided slices, grouped and dilated convolutions, integer and boolean
// ops, implicit broadcasting), traced by GoMLX on the export backend and
// on the Go backend from one graph function: the exported text run here
// must give what the Go backend computes. A difference is a bug in the
// exporter or in this interpreter, and the unit tests above pin the
// interpreter's side.
func TestOpsAgainstGoBackend(t *testing.T) {
	goBackend, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 2*5*6*4) // NHWC
	y := make([]float32, len(x))
	k := make([]float32, 3*3*2*6) // HWIO, 2 input features per group
	for i := range x {
		x[i] = float32(2 * math.Sin(0.37*float64(i)))
		y[i] = float32(math.Cos(0.11 * float64(i)))
	}
	for i := range k {
		k[i] = float32(0.5 * math.Sin(0.7*float64(i)))
	}
	ids := []int32{2, 0, 4}
	in := []shapes.Shape{shapes.Make(dtypes.Float32, 2, 5, 6, 4), shapes.Make(dtypes.Float32, 2, 5, 6, 4),
		shapes.Make(dtypes.Float32, 3, 3, 2, 6), shapes.Make(dtypes.Int32, 3, 1)}
	goIn := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(x, 2, 5, 6, 4), tensors.FromFlatDataAndDimensions(y, 2, 5, 6, 4),
		tensors.FromFlatDataAndDimensions(k, 3, 3, 2, 6), tensors.FromFlatDataAndDimensions(ids, 3, 1)}
	hloIn := []interp.Tensor{interp.NewF32(interp.F32, x, 2, 5, 6, 4), interp.NewF32(interp.F32, y, 2, 5, 6, 4),
		interp.NewF32(interp.F32, k, 3, 3, 2, 6), interp.NewInts(interp.I32, []int64{2, 0, 4}, 3, 1)}

	half := func(v *Node) *Node { return Scalar(v.Graph(), dtypes.Float32, 0.5) }
	cases := []struct {
		name string
		fn   func(x, y, k, ids *Node) []*Node
	}{
		{"binary", func(x, y, _, _ *Node) []*Node {
			row := Slice(y, AxisRange(0, 1)) // [1, 5, 6, 4]: implicit broadcast
			pos := Add(Abs(y), half(y))
			return []*Node{Add(x, row), Sub(x, y), Mul(x, row), Div(x, pos), Max(x, y), Min(x, row), Pow(pos, x)}
		}},
		{"unary", func(x, _, _, _ *Node) []*Node {
			pos := Add(Abs(x), half(x))
			return []*Node{Neg(x), Abs(x), Sign(x), Exp(x), Log(pos), Sqrt(pos), Rsqrt(pos), Erf(x),
				Logistic(x), Tanh(x), Cos(x), Sin(x), Floor(x), Round(x)}
		}},
		{"compare, where, clamp, logic", func(x, y, _, _ *Node) []*Node {
			g := x.Graph()
			lt, ge := LessThan(x, y), GreaterOrEqual(x, Scalar(g, dtypes.Float32, 0))
			both := LogicalAnd(ge, LogicalNot(Equal(x, y)))
			either := LogicalOr(lt, both)
			return []*Node{Where(lt, x, half(x)), Where(both, y, x), ConvertDType(either, dtypes.Float32),
				Clamp(Scalar(g, dtypes.Float32, -0.5), x, Scalar(g, dtypes.Float32, 0.7))}
		}},
		{"data movement", func(x, y, _, _ *Node) []*Node {
			g := x.Graph()
			// Positive edge padding only: the Go backend panics on a
			// negative one (slice bounds out of range); TestDataMovement
			// checks cropping by hand.
			return []*Node{
				Pad(x, Scalar(g, dtypes.Float32, 9), compute.PadAxis{Start: 1, End: 2}, compute.PadAxis{Start: 2, End: 1, Interior: 2}, compute.PadAxis{Interior: 1}),
				Slice(x, AxisRange(1, 2), AxisRange(0, 5).Stride(2), AxisRange(1).Stride(3)),
				Concatenate([]*Node{x, y, x}, 2),
				TransposeAllDims(x, 3, 0, 2, 1),
				Reshape(x, 10, 24),
				BroadcastToDims(Slice(x, AxisRange(0, 1), AxisRange(0, 1)), 3, 5, 6, 4),
				ConvertDType(Iota(g, shapes.Make(dtypes.Int32, 3, 4), 1), dtypes.Float32),
			}
		}},
		{"reductions", func(x, _, _, _ *Node) []*Node {
			return []*Node{ReduceSum(x, 1, 2), ReduceMax(x), ReduceMin(x, 3), ReduceMax(x, 0, 3)}
		}},
		{"convert", func(x, _, _, _ *Node) []*Node {
			i := ConvertDType(Mul(x, Scalar(x.Graph(), dtypes.Float32, 3)), dtypes.Int32)
			h := ConvertDType(ConvertDType(x, dtypes.Float16), dtypes.Float32)
			return []*Node{ConvertDType(i, dtypes.Float32), ConvertDType(Add(i, i), dtypes.Float32), h}
		}},
		{"gather", func(x, _, _, ids *Node) []*Node {
			return []*Node{Gather(Reshape(x, 10, 24), ids), Gather(Reshape(x, 5, 2, 24), ids)}
		}},
		{"dot", func(x, y, _, _ *Node) []*Node {
			return []*Node{Einsum("bhwc,bhwd->bcd", x, y), Einsum("bhwc,bhvc->bhwv", x, y)}
		}},
		{"convolution", func(x, _, k, _ *Node) []*Node {
			return []*Node{
				Convolve(x, k).ChannelGroupCount(2).StridePerAxis(2, 1).PaddingPerDim([][2]int{{1, 0}, {2, 1}}).Done(),
				Convolve(x, k).ChannelGroupCount(2).DilationPerAxis(1, 2).PaddingPerDim([][2]int{{0, 2}, {1, 1}}).Done(),
				Convolve(x, k).ChannelGroupCount(2).InputDilationPerAxis(2, 1).PaddingPerDim([][2]int{{1, 1}, {1, 1}}).Done(),
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			build := func(_ nn.Scope, in []*Node) []*Node {
				outs := c.fn(in[0], in[1], in[2], in[3])
				for i, o := range outs {
					outs[i] = ConvertDType(o, dtypes.Float32)
				}
				return outs
			}
			ref, err := nn.Compile("ops", nn.NewWeights(goBackend, noWeights{}, nn.Widen), in, build)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			want, err := ref.Run(goIn...)
			if err != nil {
				t.Fatal(err)
			}
			exp, err := nn.Compile("ops", nn.NewWeights(hlo.New(), noWeights{}, nn.Widen), in, build)
			if err != nil {
				t.Fatal(err)
			}
			got := exported{prog: exp}.run(t, hloIn...)
			if len(got) != len(want) {
				t.Fatalf("%d outputs, want %d", len(got), len(want))
			}
			for i := range want {
				w := tensors.MustCopyFlatData[float32](want[i])
				if s := want[i].Shape().Dimensions; len(s) != len(got[i].Dims) || len(w) != len(got[i].F32) {
					t.Errorf("output %d: shape %v, Go backend %v", i, got[i].Dims, s)
					continue
				}
				golden.AssertClose(t, fmt.Sprintf("output %d", i), got[i].F32, w, 1e-5)
			}
		})
	}
}
