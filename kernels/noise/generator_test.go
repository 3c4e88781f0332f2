package noise

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// The Cephes polynomials are accurate to a few float32 ulp; a gross error
// here would show up in the golden test only as noise of the wrong shape.
func TestLogSincosAccuracy(t *testing.T) {
	for i := 1; i <= 1<<12; i++ {
		x := float32(i) / (1 << 12)
		if got, want := float64(log32(x)), math.Log(float64(x)); math.Abs(got-want) > 4e-7*math.Max(1, math.Abs(want)) {
			t.Errorf("log32(%g) = %g, want %g", x, got, want)
		}
		theta := float32(twoPi * x)
		sin, cos := sincos32(theta)
		if math.Abs(float64(sin)-math.Sin(float64(theta))) > 3e-7 || math.Abs(float64(cos)-math.Cos(float64(theta))) > 3e-7 {
			t.Errorf("sincos32(%g) = %g, %g, want %g, %g", theta, sin, cos,
				math.Sin(float64(theta)), math.Cos(float64(theta)))
		}
	}
	if v := log32(0); !math.IsNaN(float64(v)) {
		t.Errorf("log32(0) = %g, want NaN", v)
	}
}

func TestRandnShapes(t *testing.T) {
	tests := []struct {
		shape []int
		want  int
	}{
		{nil, 1}, // a scalar, as torch.randn(())
		{[]int{0}, 0},
		{[]int{5}, 5},
		{[]int{15}, 15},
		{[]int{16}, 16},
		{[]int{17}, 17},
		{[]int{1, 4, 3, 5}, 60},
		{[]int{2, 0, 3}, 0},
	}
	for _, tt := range tests {
		got := NewGenerator(1).Randn(tt.shape...)
		if len(got) != tt.want {
			t.Errorf("Randn(%v) has %d values, want %d", tt.shape, len(got), tt.want)
		}
		for i, v := range got {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || math.Abs(float64(v)) > 7 {
				t.Errorf("Randn(%v)[%d] = %g", tt.shape, i, v)
			}
		}
	}
}

func TestRandnNegativeDimensionPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Randn(2, -1) did not panic")
		}
	}()
	NewGenerator(0).Randn(2, -1)
}

// Draws of fewer than 16 values keep the second half of each Box-Muller
// pair in the generator, so two single draws equal one draw of two.
func TestRandnCachedSample(t *testing.T) {
	pair := NewGenerator(7).Randn(2)
	g := NewGenerator(7)
	a, b := g.Randn(1), g.Randn(1)
	if a[0] != pair[0] || b[0] != pair[1] {
		t.Errorf("Randn(1), Randn(1) = %v, %v; want %v", a, b, pair)
	}
	// Reseeding drops the cached value.
	g.Randn(1)
	g.Seed(7)
	if c := g.Randn(1); c[0] != pair[0] {
		t.Errorf("after Seed, Randn(1) = %v, want %v", c, pair[:1])
	}
	// The vectorised path neither reads nor clears the cache.
	g = NewGenerator(7)
	g.Randn(1)
	g.Randn(16)
	if c := g.Randn(1); c[0] != pair[1] {
		t.Errorf("cached sample after Randn(16) = %v, want %v", c, pair[1])
	}
}

// Seeds that differ by a multiple of 2^32 give the same stream, as in torch,
// though the generator remembers the full seed.
func TestSeedLow32Bits(t *testing.T) {
	g := NewGenerator(1<<32 + 5)
	if got := g.InitialSeed(); got != 1<<32+5 {
		t.Errorf("InitialSeed() = %d", got)
	}
	if a, b := g.Randn(64), NewGenerator(5).Randn(64); !slices.Equal(a, b) {
		t.Error("seed 2^32+5 and seed 5 draw different noise")
	}
}

func TestRand(t *testing.T) {
	g, ref := NewGenerator(3), NewGenerator(3)
	got := g.Rand(2, 20)
	for i, v := range got {
		want := float32(ref.Uint32()&0xffffff) / (1 << 24)
		if v != want || v < 0 || v >= 1 {
			t.Errorf("Rand[%d] = %g, want %g in [0, 1)", i, v, want)
		}
	}
}

func TestUint64(t *testing.T) {
	g, ref := NewGenerator(9), NewGenerator(9)
	hi, lo := ref.Uint32(), ref.Uint32()
	if got, want := g.Uint64(), uint64(hi)<<32|uint64(lo); got != want {
		t.Errorf("Uint64() = %#x, want %#x", got, want)
	}
}

func BenchmarkRandnLatents(b *testing.B) {
	g := NewGenerator(0)
	dst := make([]float32, 4*96*96) // 768x768 image latents
	b.SetBytes(int64(4 * len(dst)))
	for b.Loop() {
		g.FillRandn(dst)
	}
}

func ExampleGenerator_Randn() {
	// torch.randn(1, 4, 8, 8, generator=torch.Generator("cpu").manual_seed(0))
	g := NewGenerator(0)
	latents := g.Randn(1, 4, 8, 8)
	fmt.Printf("%.4f %.4f %.4f\n", latents[0], latents[1], latents[2])
	// Output: -1.1258 -1.1524 -0.2506
}
