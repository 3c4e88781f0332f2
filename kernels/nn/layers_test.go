package nn

import (
	"fmt"
	"math"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

// naiveConv is a direct NCHW/OIHW convolution written from the definition.
func naiveConv(x []float32, n, c, h, w int, k []float32, o, kh, kw, stride int, pad Padding, bias []float32) ([]float32, int, int) {
	ho := (h+pad[0]+pad[1]-kh)/stride + 1
	wo := (w+pad[2]+pad[3]-kw)/stride + 1
	out := make([]float32, n*o*ho*wo)
	for b := 0; b < n; b++ {
		for oc := 0; oc < o; oc++ {
			for y := 0; y < ho; y++ {
				for xx := 0; xx < wo; xx++ {
					sum := float64(bias[oc])
					for ic := 0; ic < c; ic++ {
						for dy := 0; dy < kh; dy++ {
							for dx := 0; dx < kw; dx++ {
								iy, ix := y*stride+dy-pad[0], xx*stride+dx-pad[2]
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								sum += float64(x[((b*c+ic)*h+iy)*w+ix]) * float64(k[((oc*c+ic)*kh+dy)*kw+dx])
							}
						}
					}
					out[((b*o+oc)*ho+y)*wo+xx] = float32(sum)
				}
			}
		}
	}
	return out, ho, wo
}

func TestConv2DLoweringsMatchDefinition(t *testing.T) {
	backend := goBackend(t)
	const n, c, h, w, o = 2, 3, 7, 6, 5
	cases := []struct {
		name   string
		k      int
		stride int
		pad    Padding
	}{
		{"3x3 same", 3, 1, Same(3)},
		{"3x3 stride2", 3, 2, Padding{1, 1, 1, 1}},
		{"3x3 stride2 right-bottom", 3, 2, Padding{0, 1, 0, 1}},
		{"1x1", 1, 1, Padding{}},
	}
	for _, tc := range cases {
		src := RandomSource{Shapes: map[string][]int{"weight": {o, c, tc.k, tc.k}, "bias": {o}}, Seed: 3}
		x := make([]float32, n*c*h*w)
		for i := range x {
			x[i] = float32(math.Sin(float64(i) * 0.7))
		}
		_, _, kb, _ := src.Tensor("weight")
		_, _, bb, _ := src.Tensor("bias")
		kf := bytesToF32(kb)
		bf := bytesToF32(bb)
		want, _, _ := naiveConv(x, n, c, h, w, kf, o, tc.k, tc.k, tc.stride, tc.pad, bf)
		for _, low := range []Lowering{LowerGo, LowerXLA} {
			wts := NewWeights(backend, src, Widen).WithLowering(low)
			p, err := Compile("conv", wts, []shapes.Shape{shapes.Make(dtypes.Float32, n, c, h, w)}, func(s Scope, in []*Node) []*Node {
				return []*Node{NHWCToNCHW(Conv2D(s, NCHWToNHWC(in[0]), tc.stride, tc.pad))}
			})
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Run(tensors.FromFlatDataAndDimensions(x, n, c, h, w))
			if err != nil {
				t.Fatal(err)
			}
			got := tensors.MustCopyFlatData[float32](out[0])
			if len(got) != len(want) {
				t.Fatalf("%s lowering %d: %d values, want %d", tc.name, low, len(got), len(want))
			}
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-5 {
					t.Fatalf("%s lowering %d: value %d = %g, want %g", tc.name, low, i, got[i], want[i])
				}
			}
			p.Close()
		}
	}
}

func bytesToF32(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

func TestLoweringForGoBackend(t *testing.T) {
	b := goBackend(t)
	if got := LoweringFor(b); got != LowerGo {
		t.Errorf("LoweringFor(go backend) = %d, want LowerGo", got)
	}
}

// Row-blocked attention computes the same function as whole-matrix
// attention (softmax is per query row), including a ragged last block.
func TestAttentionRowBlocks(t *testing.T) {
	backend := goBackend(t)
	const b, tq, tk, c, heads = 2, 37, 23, 12, 3
	mk := func(n int, seed float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(math.Sin(float64(i)*seed + seed))
		}
		return out
	}
	q := tensors.FromFlatDataAndDimensions(mk(b*tq*c, 0.31), b, tq, c)
	k := tensors.FromFlatDataAndDimensions(mk(b*tk*c, 0.57), b, tk, c)
	v := tensors.FromFlatDataAndDimensions(mk(b*tk*c, 0.73), b, tk, c)
	run := func(chunkBytes int) []float32 {
		g := NewGraph(backend, "attn")
		in := []*Node{Parameter(g, "q", q.Shape()), Parameter(g, "k", k.Shape()), Parameter(g, "v", v.Shape())}
		if err := g.Compile(attention(in[0], in[1], in[2], heads, nil, chunkBytes)); err != nil {
			t.Fatal(err)
		}
		return tensors.MustCopyFlatData[float32](g.Run(q, k, v)[0])
	}
	whole := run(1 << 30)
	rowBytes := b * heads * tk * 4
	blocked := run(5 * rowBytes) // blocks of 5 rows: 7 full blocks and one of 2
	for i := range whole {
		if math.Abs(float64(whole[i]-blocked[i])) > 1e-6 {
			t.Fatalf("value %d: blocked %g, whole %g", i, blocked[i], whole[i])
		}
	}
}

// Row-blocked im2col gives the direct convolution's result for every
// block size, strides and paddings included.
func TestIm2colRowBlocks(t *testing.T) {
	backend := goBackend(t)
	const n, c, h, w, o = 2, 3, 9, 7, 4
	x := cosines(n * c * h * w)
	for _, tc := range []struct {
		stride int
		pad    Padding
	}{{1, Same(3)}, {2, Padding{1, 1, 1, 1}}, {2, Padding{0, 1, 0, 1}}} {
		src := RandomSource{Shapes: map[string][]int{"weight": {o, c, 3, 3}, "bias": {o}}, Seed: 5}
		_, _, kb, _ := src.Tensor("weight")
		zero := make([]float32, o)
		want, ho, wo := naiveConv(x, n, c, h, w, bytesToF32(kb), o, 3, 3, tc.stride, tc.pad, zero)
		for _, rowsPerBlock := range []int{1, 2, 4, 100} {
			wts := NewWeights(backend, src, Widen)
			rowBytes := n * wo * 9 * c * 4
			p, err := Compile("conv", wts, []shapes.Shape{shapes.Make(dtypes.Float32, n, c, h, w)}, func(s Scope, in []*Node) []*Node {
				k := s.Weight("weight", HWIO)
				return []*Node{NHWCToNCHW(im2colConvBlocks(NCHWToNHWC(in[0]), k, tc.stride, tc.pad, rowsPerBlock*rowBytes))}
			})
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Run(tensors.FromFlatDataAndDimensions(x, n, c, h, w))
			p.Close()
			if err != nil {
				t.Fatal(err)
			}
			got := tensors.MustCopyFlatData[float32](out[0])
			if len(got) != n*o*ho*wo {
				t.Fatalf("stride %d, %d rows per block: %d values, want %d", tc.stride, rowsPerBlock, len(got), n*o*ho*wo)
			}
			for i := range want {
				if math.Abs(float64(got[i]-want[i])) > 1e-5 {
					t.Fatalf("stride %d pad %v, %d rows per block: value %d = %g, want %g", tc.stride, tc.pad, rowsPerBlock, i, got[i], want[i])
				}
			}
		}
	}
}

// Widening an fp16 weight in pieces computes the same convolution and
// linear layer as widening it whole, whatever the piece size: pieces of
// whole taps along a kernel row, of input rows for a matmul.
func TestWidenedPieces(t *testing.T) {
	backend := goBackend(t)
	const n, c, h, w, o = 2, 6, 9, 7, 5
	x := cosines(n * h * w * c)
	src := RandomSource{Shapes: map[string][]int{"conv": {o, c, 3, 3}, "linear": {o, c}}, DType: safetensors.F16, Seed: 7}
	run := func(build func(s Scope, x *Node) *Node) []float32 {
		t.Helper()
		return runNHWC(t, backend, src, x, n, h, w, c, build)
	}
	same := func(what string, got, want []float32) {
		t.Helper()
		assertClose(t, what, got, want, 1e-5, 0)
	}
	tapBytes := c * o * 4
	for _, tc := range []struct {
		stride int
		pad    Padding
	}{{1, Same(3)}, {2, Padding{0, 1, 0, 1}}} {
		whole := run(func(s Scope, x *Node) *Node { return im2colConv(x, s.Weight("conv", HWIO), tc.stride, tc.pad) })
		for _, taps := range []int{1, 2, 3} {
			for _, rows := range []int{1, 3, 100} {
				rowBytes := n * w * 9 * c * 4
				got := run(func(s Scope, x *Node) *Node {
					stored := widenedInGraph(LowerGo, s.Weight("conv", HWIO))
					if stored == nil {
						t.Fatal("fp16 weight is not widened in the graph")
					}
					return im2colConvWidenedPieces(x, stored, tc.stride, tc.pad, rows*rowBytes, taps*tapBytes)
				})
				same(fmt.Sprintf("conv stride %d, %d taps per piece, %d rows per block", tc.stride, taps, rows), got, whole)
			}
		}
	}
	whole := run(func(s Scope, x *Node) *Node { return MatMul(Reshape(x, -1, c), s.Weight("linear", InOut)) })
	for _, rows := range []int{1, 4, 6} {
		got := run(func(s Scope, x *Node) *Node {
			return matMulWidenedPieces(Reshape(x, -1, c), widenedInGraph(LowerGo, s.Weight("linear", InOut)), rows*o*4)
		})
		same(fmt.Sprintf("linear, %d rows per piece", rows), got, whole)
	}
	if got := pieces(9, 4); got != 3 {
		t.Errorf("pieces(9, 4) = %d, want 3 (equal runs)", got)
	}
}

// The blocked GroupNorm → activation → convolution computes the
// composition for every block size, stride and padding, for both weight
// precisions, with a residual added by blocks, and with fp16 storage of
// its input and output (to fp16's rounding).
func TestNormActConvBlocks(t *testing.T) {
	backend := goBackend(t)
	const n, c, h, w, o, groups = 2, 6, 9, 7, 5, 3
	x := make([]float32, n*h*w*c)
	for i := range x {
		x[i] = float32(math.Cos(float64(i)*0.37) + 0.5*math.Sin(float64(i)*0.011))
	}
	shapes4 := map[string][]int{"norm.weight": {c}, "norm.bias": {c}, "conv.weight": {o, c, 3, 3}, "conv.bias": {o}, "sc.weight": {o, c, 1, 1}}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16} {
		src := RandomSource{Shapes: shapes4, DType: dt, Seed: 11}
		run := func(build func(s Scope, x *Node) *Node) []float32 {
			t.Helper()
			return runNHWC(t, backend, src, x, n, h, w, c, build)
		}
		for _, tc := range []struct {
			stride   int
			pad      Padding
			residual bool
			half     bool
		}{
			{1, Same(3), false, false}, {2, Padding{1, 1, 1, 1}, false, false}, {2, Padding{0, 1, 0, 1}, false, false},
			{1, Same(3), true, false}, {1, Same(3), true, true}, {2, Padding{0, 1, 0, 1}, false, true},
		} {
			shortcut := func(s Scope, x *Node) func(r0, r1 int) *Node {
				if !tc.residual {
					return nil
				}
				return func(r0, r1 int) *Node { return Conv2D(s.In("sc"), Rows(x, r0, r1), 1, Padding{}) }
			}
			want := run(func(s Scope, x *Node) *Node {
				if tc.half {
					x = F32(ConvertDType(x, dtypes.Float16))
				}
				y := Conv2D(s.In("conv"), SiLU(GroupNorm(s.In("norm"), x, groups, 1e-6)), tc.stride, tc.pad)
				if tc.residual {
					y = Add(shortcut(s, x)(0, h), y)
				}
				return y
			})
			wo := (w+tc.pad[2]+tc.pad[3]-3)/tc.stride + 1
			rowBytes := n * wo * 9 * c * 4
			for _, rows := range []int{1, 2, 3} {
				what := fmt.Sprintf("%s stride %d pad %v residual %v fp16 %v, %d rows per block", dt, tc.stride, tc.pad, tc.residual, tc.half, rows)
				got := run(func(s Scope, x *Node) *Node {
					opt := Blocked{Residual: shortcut(s, x)}
					if tc.half {
						x = ConvertDType(x, dtypes.Float16)
						opt = Blocked{Residual: shortcut(s, x), Store: dtypes.Float16}
					}
					y := normActConvBlocks(s.In("norm"), x, groups, 1e-6, SiLU, s.In("conv"), tc.stride, tc.pad, opt, rows*rowBytes)
					if y == nil {
						t.Fatalf("%s: blocked form did not apply", what)
					}
					if tc.half && y.DType() != dtypes.Float16 {
						t.Fatalf("%s: output is %s, want float16", what, y.DType())
					}
					return y
				})
				tol := 2e-5
				if tc.half {
					tol = 1e-3 // one fp16 rounding of the output
				}
				assertClose(t, what, got, want, tol, tol)
			}
		}
	}
}

// The blocked upsample → convolution computes the composition for every
// block size, odd block boundaries included.
func TestUpsampleConvBlocks(t *testing.T) {
	backend := goBackend(t)
	const n, c, h, w, o = 2, 4, 5, 3, 3
	x := make([]float32, n*h*w*c)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.29) + 0.1)
	}
	src := RandomSource{Shapes: map[string][]int{"conv.weight": {o, c, 3, 3}, "conv.bias": {o}}, DType: safetensors.F16, Seed: 13}
	run := func(build func(s Scope, x *Node) *Node) []float32 {
		t.Helper()
		return runNHWC(t, backend, src, x, n, h, w, c, build)
	}
	rowBytes := n * 2 * w * 9 * c * 4
	for _, half := range []bool{false, true} {
		want := run(func(s Scope, x *Node) *Node {
			if half {
				x = F32(ConvertDType(x, dtypes.Float16))
			}
			return Conv2D(s.In("conv"), UpsampleNearest2x(x), 1, Same(3))
		})
		for _, rows := range []int{1, 2, 3, 4} {
			got := run(func(s Scope, x *Node) *Node {
				opt := Blocked{}
				if half {
					x, opt.Store = ConvertDType(x, dtypes.Float16), dtypes.Float16
				}
				y := upsampleConvBlocks(s.In("conv"), x, opt, rows*rowBytes)
				if y == nil {
					t.Fatal("blocked form did not apply")
				}
				return F32(y)
			})
			tol := 1e-5
			if half {
				tol = 1e-3
			}
			assertClose(t, fmt.Sprintf("fp16 %v, %d rows per block", half, rows), got, want, tol, tol)
		}
	}
}

// runNHWC compiles build over one float32 NHWC input of x's values, with
// src's weights kept as stored, runs it once and returns its output as
// float32.
// goBackend is the Go backend the tests run on.
func goBackend(t *testing.T) compute.Backend {
	t.Helper()
	b, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cosines is a smooth, sign-changing test input of n values.
func cosines(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(math.Cos(float64(i) * 0.37))
	}
	return x
}

func runNHWC(t *testing.T, backend compute.Backend, src Source, x []float32, n, h, w, c int, build func(s Scope, x *Node) *Node) []float32 {
	t.Helper()
	p, err := Compile("test", NewWeights(backend, src, KeepStored), []shapes.Shape{shapes.Make(dtypes.Float32, n, h, w, c)}, func(s Scope, in []*Node) []*Node {
		return []*Node{F32(build(s, in[0]))}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, err := p.Run(tensors.FromFlatDataAndDimensions(x, n, h, w, c))
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out[0])
}

// assertClose fails unless every value of got is within abs + rel·|want|
// of want's.
func assertClose(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > abs+rel*math.Abs(float64(want[i])) {
			t.Fatalf("%s: value %d = %g, want %g", what, i, got[i], want[i])
		}
	}
}
