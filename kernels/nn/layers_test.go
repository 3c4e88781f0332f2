package nn

import (
	"math"
	"testing"

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
	backend, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
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
	b, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	if got := LoweringFor(b); got != LowerGo {
		t.Errorf("LoweringFor(go backend) = %d, want LowerGo", got)
	}
}

// Row-blocked attention computes the same function as whole-matrix
// attention (softmax is per query row), including a ragged last block.
func TestAttentionRowBlocks(t *testing.T) {
	backend, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
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
	backend, err := NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	const n, c, h, w, o = 2, 3, 9, 7, 4
	x := make([]float32, n*c*h*w)
	for i := range x {
		x[i] = float32(math.Cos(float64(i) * 0.37))
	}
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
