package metrics

import (
	"math"
	"testing"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// grey builds a w×h RGB image whose three channels all hold vals (row-major).
func grey(w, h int, vals ...uint8) *imageproc.RGB {
	m := &imageproc.RGB{Width: w, Height: h, Pix: make([]uint8, 3*w*h)}
	for i := 0; i < w*h; i++ {
		v := vals[i%len(vals)]
		m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2] = v, v, v
	}
	return m
}

// solid builds a w×h image of one colour.
func solid(w, h int, r, g, b uint8) *imageproc.RGB {
	m := &imageproc.RGB{Width: w, Height: h, Pix: make([]uint8, 3*w*h)}
	for i := 0; i < w*h; i++ {
		m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2] = r, g, b
	}
	return m
}

// pattern is a deterministic textured image with values in [0, 245], so
// that adding up to 10 never clips.
func pattern(w, h int) *imageproc.RGB {
	m := &imageproc.RGB{Width: w, Height: h, Pix: make([]uint8, 3*w*h)}
	for i := range m.Pix {
		m.Pix[i] = uint8((i*37 + (i/7)*11) % 246)
	}
	return m
}

func offset(m *imageproc.RGB, d uint8) *imageproc.RGB {
	out := &imageproc.RGB{Width: m.Width, Height: m.Height, Pix: make([]uint8, len(m.Pix))}
	for i, v := range m.Pix {
		out.Pix[i] = v + d
	}
	return out
}

func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol
}

// Hand values below use C1 = (0.01·255)² = 6.5025 and C2 = (0.03·255)² = 58.5225.
const c1, c2 = 6.5025, 58.5225

func TestPSNR(t *testing.T) {
	p := pattern(16, 12)
	tests := []struct {
		name string
		a, b *imageproc.RGB
		want float64
	}{
		{"identical", p, p, math.Inf(1)},
		{"offset 1", p, offset(p, 1), 20 * math.Log10(255.0/1)},
		{"offset 5", p, offset(p, 5), 20 * math.Log10(255.0/5)},
		{"offset 10", p, offset(p, 10), 20 * math.Log10(255.0/10)},
		// One pixel, one channel off by 3: MSE = 9/3 = 3.
		{"one sample", solid(1, 1, 0, 0, 0), solid(1, 1, 3, 0, 0), 10 * math.Log10(255*255/3.0)},
		// Black against white: MSE = 255², PSNR = 0 dB.
		{"black white", solid(4, 4, 0, 0, 0), solid(4, 4, 255, 255, 255), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PSNR(tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if math.IsInf(tt.want, 1) {
				if !math.IsInf(got, 1) {
					t.Fatalf("PSNR = %v, want +Inf", got)
				}
				return
			}
			if !near(got, tt.want, 1e-12) {
				t.Fatalf("PSNR = %.15g, want %.15g", got, tt.want)
			}
		})
	}
}

func TestPSNROffsetExact(t *testing.T) {
	p := pattern(8, 8)
	for d := uint8(1); d <= 10; d++ {
		got, err := PSNR(p, offset(p, d))
		if err != nil {
			t.Fatal(err)
		}
		if want := 20 * math.Log10(255/float64(d)); got != want {
			t.Errorf("offset %d: PSNR = %.17g, want exactly %.17g", d, got, want)
		}
	}
}

func TestSizeErrors(t *testing.T) {
	a, b := solid(11, 11, 0, 0, 0), solid(12, 11, 0, 0, 0)
	bad := &imageproc.RGB{Width: 2, Height: 2, Pix: make([]uint8, 5)}
	small := solid(10, 10, 0, 0, 0)
	if _, err := PSNR(a, b); err == nil {
		t.Error("PSNR of different sizes: no error")
	}
	if _, err := PSNR(a, nil); err == nil {
		t.Error("PSNR of nil: no error")
	}
	if _, err := PSNR(bad, bad); err == nil {
		t.Error("PSNR of a malformed image: no error")
	}
	if _, err := SSIM(a, b, SSIMOptions{}); err == nil {
		t.Error("SSIM of different sizes: no error")
	}
	if _, err := SSIM(small, small, SSIMOptions{}); err == nil {
		t.Error("SSIM of an image smaller than the window: no error")
	}
	if _, err := MSSSIM(small, small, SSIMOptions{}); err == nil {
		t.Error("MS-SSIM of an image smaller than the window: no error")
	}
	for _, o := range []SSIMOptions{{WindowSize: -1}, {Sigma: -1}, {K1: math.NaN()}, {L: -5}, {Channels: 7}} {
		if _, err := SSIM(a, a, o); err == nil {
			t.Errorf("SSIM with %+v: no error", o)
		}
	}
}

func TestSSIM(t *testing.T) {
	uniform2 := SSIMOptions{Uniform: true, WindowSize: 2}
	p := pattern(32, 24)
	tests := []struct {
		name string
		a, b *imageproc.RGB
		opts SSIMOptions
		want float64
	}{
		{"identical gaussian", p, p, SSIMOptions{}, 1},
		{"identical luma", p, p, SSIMOptions{Channels: Luma}, 1},
		// One 2×2 window over x = [0 255; 0 255], y = [0 255; 255 255]:
		// μx = 127.5, μy = 191.25, σx² = 16256.25, σy² = 12192.1875,
		// σxy = 8128.125 (weights 1/4, no N−1 correction).
		{"two-value 2x2", grey(2, 2, 0, 255, 0, 255), grey(2, 2, 0, 255, 255, 255), uniform2,
			(2*127.5*191.25 + c1) * (2*8128.125 + c2) / ((127.5*127.5 + 191.25*191.25 + c1) * (16256.25 + 12192.1875 + c2))},
		// Constant offset of a two-value checker: x ∈ {50, 150}, y = x + 20.
		// μx = 100, μy = 120, σx² = σy² = σxy = 2500: cs = 1.
		{"checker offset", grey(2, 2, 50, 150, 150, 50), grey(2, 2, 70, 170, 170, 70), uniform2,
			(2*100*120 + c1) / (100*100 + 120*120 + c1)},
		// Anti-correlated: x = [0 255; 255 0], y its inverse. μ = 127.5 for
		// both, σ² = 127.5², σxy = −127.5²: SSIM = (C2 − 2·127.5²)/(2·127.5² + C2).
		{"inverted checker", grey(2, 2, 0, 255, 255, 0), grey(2, 2, 255, 0, 0, 255), uniform2,
			(c2 - 2*127.5*127.5) / (2*127.5*127.5 + c2)},
		// Two 2×2 windows over a 3×2 image, averaged: x = [0 255 0; 0 255 0],
		// y = [0 255 255; 0 255 255]. Left window: identical, 1. Right
		// window: x = [255 0; 255 0], y = 255: μx = 127.5, μy = 255,
		// σx² = 16256.25, σy² = σxy = 0.
		{"two windows", grey(3, 2, 0, 255, 0, 0, 255, 0), grey(3, 2, 0, 255, 255, 0, 255, 255), uniform2,
			(1 + (2*127.5*255+c1)*c2/((127.5*127.5+255*255+c1)*(16256.25+c2))) / 2},
		// Constant images under the Gaussian window: σ = 0, so only the
		// luminance term remains, l = (2·100·110 + C1)/(100² + 110² + C1).
		{"constant gaussian", solid(16, 16, 100, 100, 100), solid(16, 16, 110, 110, 110), SSIMOptions{},
			(2*100*110 + c1) / (100*100 + 110*110 + c1)},
		// Per channel: R differs as above, G and B are equal (1 each).
		{"per channel", solid(12, 12, 100, 50, 0), solid(12, 12, 110, 50, 0), SSIMOptions{},
			((2*100*110+c1)/(100*100+110*110+c1) + 2) / 3},
		// Luma: Y = 0.299·R + 0.587·G + 0.114·B = 59.25 and 62.24.
		{"luma", solid(12, 12, 100, 50, 0), solid(12, 12, 110, 50, 0), SSIMOptions{Channels: Luma},
			(2*59.25*62.24 + c1) / (59.25*59.25 + 62.24*62.24 + c1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SSIM(tt.a, tt.b, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !near(got, tt.want, 1e-9) {
				t.Fatalf("SSIM = %.15g, want %.15g", got, tt.want)
			}
		})
	}
}

func TestSSIMIdenticalIsExactlyOne(t *testing.T) {
	p := pattern(40, 33)
	for _, o := range []SSIMOptions{{}, {Channels: Luma}, {Uniform: true, WindowSize: 8}} {
		got, err := SSIM(p, p, o)
		if err != nil {
			t.Fatal(err)
		}
		if got != 1 {
			t.Errorf("%+v: SSIM = %.17g, want exactly 1", o, got)
		}
		ms, err := MSSSIM(p, p, o)
		if err != nil {
			t.Fatal(err)
		}
		if ms.Value != 1 {
			t.Errorf("%+v: MS-SSIM = %.17g, want exactly 1", o, ms.Value)
		}
	}
}

func TestGaussianWindow(t *testing.T) {
	w := SSIMOptions{WindowSize: 11, Sigma: 1.5}.window()
	var sum float64
	for i, v := range w {
		sum += v
		if v != w[len(w)-1-i] {
			t.Errorf("window not symmetric at %d", i)
		}
	}
	if !near(sum, 1, 1e-15) {
		t.Errorf("window sums to %v", sum)
	}
	// Ratio of the centre to its neighbour is exp(1/(2σ²)).
	if r := w[5] / w[4]; !near(r, math.Exp(1/(2*1.5*1.5)), 1e-12) {
		t.Errorf("centre/neighbour = %v", r)
	}
}

func TestMSSSIMScales(t *testing.T) {
	tests := []struct{ w, h, win, want int }{
		{512, 512, 11, 5},
		{176, 176, 11, 5}, // 176/16 = 11
		{175, 176, 11, 4}, // 175>>4 = 10
		{64, 64, 11, 3},   // 64, 32, 16
		{64, 21, 11, 1},
		{11, 11, 11, 1},
		{10, 64, 11, 0},
		{4, 4, 2, 2},
		{64, 64, 0, 0},
	}
	for _, tt := range tests {
		if got := MSSSIMScales(tt.w, tt.h, tt.win); got != tt.want {
			t.Errorf("MSSSIMScales(%d, %d, %d) = %d, want %d", tt.w, tt.h, tt.win, got, tt.want)
		}
	}
}

func TestMSSSIM(t *testing.T) {
	// Constant images: every scale's cs is 1, the coarsest scale's SSIM is
	// the luminance term l, so MS-SSIM = l^w_M with w_M the coarsest
	// scale's (renormalized) weight.
	l := (2*100*110 + c1) / (100*100 + 110*110 + c1)
	tests := []struct {
		name        string
		size        int
		wantScales  int
		wantWeights []float64
		want        float64
	}{
		{"five scales", 176, 5, []float64{0.0448, 0.2856, 0.3001, 0.2363, 0.1333}, math.Pow(l, 0.1333)},
		{"three scales", 64, 3, []float64{0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305}, math.Pow(l, 0.3001/0.6305)},
		{"two scales", 22, 2, []float64{0.0448 / 0.3304, 0.2856 / 0.3304}, math.Pow(l, 0.2856/0.3304)},
		{"one scale is SSIM", 11, 1, []float64{1}, l},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := solid(tt.size, tt.size, 100, 100, 100)
			b := solid(tt.size, tt.size, 110, 110, 110)
			got, err := MSSSIM(a, b, SSIMOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Scales != tt.wantScales {
				t.Errorf("scales = %d, want %d", got.Scales, tt.wantScales)
			}
			if len(got.Weights) != len(tt.wantWeights) {
				t.Fatalf("weights = %v, want %v", got.Weights, tt.wantWeights)
			}
			for i := range got.Weights {
				if !near(got.Weights[i], tt.wantWeights[i], 1e-12) {
					t.Errorf("weights = %v, want %v", got.Weights, tt.wantWeights)
				}
			}
			if !near(got.Value, tt.want, 1e-12) {
				t.Errorf("MS-SSIM = %.15g, want %.15g", got.Value, tt.want)
			}
		})
	}
}

func TestMSSSIMClampsNegative(t *testing.T) {
	// An inverted checker has SSIM < 0 (see TestSSIM); one scale fits a
	// 2×2 image with a 2×2 window, and its negative value is clamped to 0.
	o := SSIMOptions{Uniform: true, WindowSize: 2}
	a, b := grey(2, 2, 0, 255, 255, 0), grey(2, 2, 255, 0, 0, 255)
	s, err := SSIM(a, b, o)
	if err != nil || s >= 0 {
		t.Fatalf("SSIM = %v, %v: want a negative value", s, err)
	}
	ms, err := MSSSIM(a, b, o)
	if err != nil {
		t.Fatal(err)
	}
	if ms.Value != 0 || ms.Scales != 1 {
		t.Fatalf("MS-SSIM = %+v, want 0 over 1 scale", ms)
	}
}

func TestHalve(t *testing.T) {
	// 5×3: the odd last column and row are dropped.
	p := plane{5, 3, []float64{
		1, 3, 5, 7, 100,
		5, 7, 9, 11, 100,
		100, 100, 100, 100, 100,
	}}
	got := halve(p)
	if got.w != 2 || got.h != 1 || got.v[0] != 4 || got.v[1] != 8 {
		t.Fatalf("halve = %+v, want 2×1 [4 8]", got)
	}
}

func TestAbsDiff(t *testing.T) {
	d, err := AbsDiff([]float32{1, -2, 3, 0}, []float32{1.5, -2, 1, 0})
	if err != nil {
		t.Fatal(err)
	}
	if d.Max != 2 || d.Mean != 2.5/4 || d.RefMaxAbs != 3 {
		t.Errorf("AbsDiff = %+v, want max 2, mean 0.625, ref 3", d)
	}
	nan := float32(math.NaN())
	if d, _ := AbsDiff([]float32{1, 2}, []float32{nan, 2}); !math.IsNaN(d.Max) || !math.IsNaN(d.Mean) {
		t.Errorf("NaN hidden: %+v", d)
	}
	if _, err := AbsDiff([]float32{1}, []float32{1, 2}); err == nil {
		t.Error("different lengths: no error")
	}
	if _, err := AbsDiff(nil, nil); err == nil {
		t.Error("empty: no error")
	}
}

// directSSIM evaluates Wang et al.'s definition literally on one grey
// plane: for every window position, weighted means, then variances and
// covariance as Σ w·(x−μx)(y−μy) with the 2-D Gaussian weights
// exp(−(i²+j²)/2σ²)/Z, then the SSIM and cs averages. It shares nothing
// with the separable implementation.
func directSSIM(x, y [][]float64, k int, sigma float64) (ssim, cs float64) {
	h, w := len(x), len(x[0])
	c := float64(k-1) / 2
	win := make([][]float64, k)
	var z float64
	for i := range win {
		win[i] = make([]float64, k)
		for j := range win[i] {
			di, dj := float64(i)-c, float64(j)-c
			win[i][j] = math.Exp(-(di*di + dj*dj) / (2 * sigma * sigma))
			z += win[i][j]
		}
	}
	n := 0
	for r := 0; r+k <= h; r++ {
		for q := 0; q+k <= w; q++ {
			var mx, my float64
			for i := 0; i < k; i++ {
				for j := 0; j < k; j++ {
					mx += win[i][j] / z * x[r+i][q+j]
					my += win[i][j] / z * y[r+i][q+j]
				}
			}
			var vx, vy, cov float64
			for i := 0; i < k; i++ {
				for j := 0; j < k; j++ {
					dx, dy := x[r+i][q+j]-mx, y[r+i][q+j]-my
					vx += win[i][j] / z * dx * dx
					vy += win[i][j] / z * dy * dy
					cov += win[i][j] / z * dx * dy
				}
			}
			l := (2*mx*my + c1) / (mx*mx + my*my + c1)
			s := (2*cov + c2) / (vx + vy + c2)
			ssim += l * s
			cs += s
			n++
		}
	}
	return ssim / float64(n), cs / float64(n)
}

func pool(x [][]float64) [][]float64 {
	out := make([][]float64, len(x)/2)
	for i := range out {
		out[i] = make([]float64, len(x[0])/2)
		for j := range out[i] {
			out[i][j] = (x[2*i][2*j] + x[2*i][2*j+1] + x[2*i+1][2*j] + x[2*i+1][2*j+1]) / 4
		}
	}
	return out
}

func TestSSIMMatchesDirectDefinition(t *testing.T) {
	// A noisy pair: a pseudo-random image and a blurred, shifted,
	// noisier version of it, so that every term of SSIM matters.
	const w, h = 26, 23
	a := &imageproc.RGB{Width: w, Height: h, Pix: make([]uint8, 3*w*h)}
	b := &imageproc.RGB{Width: w, Height: h, Pix: make([]uint8, 3*w*h)}
	x, y := make([][]float64, h), make([][]float64, h)
	seed := uint32(12345)
	next := func() uint32 { seed = seed*1664525 + 1013904223; return seed >> 24 }
	for r := 0; r < h; r++ {
		x[r], y[r] = make([]float64, w), make([]float64, w)
		for q := 0; q < w; q++ {
			xv := uint8(next())
			yv := uint8((int(xv) + int(next())) / 2)
			x[r][q], y[r][q] = float64(xv), float64(yv)
			for ch := 0; ch < 3; ch++ {
				a.Pix[3*(r*w+q)+ch], b.Pix[3*(r*w+q)+ch] = xv, yv
			}
		}
	}
	wantSSIM, cs1 := directSSIM(x, y, 11, 1.5)
	got, err := SSIM(a, b, SSIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !near(got, wantSSIM, 1e-12) {
		t.Errorf("SSIM = %.15g, direct definition %.15g", got, wantSSIM)
	}
	// Two scales fit 23 px (23>>1 = 11).
	ssim2, _ := directSSIM(pool(x), pool(y), 11, 1.5)
	w0, w1 := 0.0448/(0.0448+0.2856), 0.2856/(0.0448+0.2856)
	wantMS := math.Pow(cs1, w0) * math.Pow(ssim2, w1)
	ms, err := MSSSIM(a, b, SSIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ms.Scales != 2 || !near(ms.Value, wantMS, 1e-12) {
		t.Errorf("MS-SSIM = %.15g over %d scales, direct definition %.15g over 2", ms.Value, ms.Scales, wantMS)
	}
	if !(wantSSIM > 0.2 && wantSSIM < 0.9) {
		t.Errorf("test pair SSIM %v: want a middling value that exercises every term", wantSSIM)
	}
}
