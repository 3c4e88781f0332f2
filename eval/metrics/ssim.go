package metrics

import (
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// Channels says which planes of an RGB image SSIM compares.
type Channels int

const (
	// PerChannel computes SSIM (or MS-SSIM) on R, G and B separately and
	// averages the three, as pytorch-msssim and torchmetrics do for colour
	// images. It is the default: a colour shift the luma hides still counts.
	PerChannel Channels = iota
	// Luma computes it once on BT.601 luma, Y = 0.299·R + 0.587·G +
	// 0.114·B, kept unrounded, as Wang et al. evaluated grey images.
	Luma
)

func (c Channels) String() string {
	switch c {
	case PerChannel:
		return "per-channel RGB, averaged"
	case Luma:
		return "BT.601 luma"
	}
	return fmt.Sprintf("Channels(%d)", int(c))
}

// SSIMOptions are SSIM's parameters. The zero value is Wang et al.'s
// standard setting: an 11×11 Gaussian window with σ = 1.5, K1 = 0.01,
// K2 = 0.03, L = 255, per-channel RGB.
type SSIMOptions struct {
	Channels Channels
	// WindowSize is the side of the square window (default 11).
	WindowSize int
	// Sigma is the Gaussian window's standard deviation (default 1.5).
	Sigma float64
	// Uniform uses a uniform window, every weight 1/WindowSize², instead
	// of the Gaussian (the 8×8 sliding window of the paper's first
	// experiments; also what hand-checked cases use).
	Uniform bool
	// K1 and K2 are the stabilizing constants (defaults 0.01 and 0.03):
	// C1 = (K1·L)², C2 = (K2·L)².
	K1, K2 float64
	// L is the dynamic range of the samples (default 255).
	L float64
}

// Resolved returns o with its zero fields set to the standard values, or
// an error for a setting SSIM refuses.
func (o SSIMOptions) Resolved() (SSIMOptions, error) {
	if o.WindowSize == 0 {
		o.WindowSize = 11
	}
	if o.Sigma == 0 {
		o.Sigma = 1.5
	}
	if o.K1 == 0 {
		o.K1 = 0.01
	}
	if o.K2 == 0 {
		o.K2 = 0.03
	}
	if o.L == 0 {
		o.L = PeakValue
	}
	switch {
	case o.WindowSize < 1:
		return o, fmt.Errorf("metrics: SSIM window size %d must be positive", o.WindowSize)
	case !(o.Sigma > 0) || math.IsInf(o.Sigma, 0):
		return o, fmt.Errorf("metrics: SSIM sigma %v must be a positive number", o.Sigma)
	case !(o.K1 > 0) || !(o.K2 > 0) || math.IsInf(o.K1, 0) || math.IsInf(o.K2, 0):
		return o, fmt.Errorf("metrics: SSIM constants K1 %v, K2 %v must be positive numbers", o.K1, o.K2)
	case !(o.L > 0) || math.IsInf(o.L, 0):
		return o, fmt.Errorf("metrics: SSIM dynamic range %v must be a positive number", o.L)
	case o.Channels != PerChannel && o.Channels != Luma:
		return o, fmt.Errorf("metrics: unknown SSIM channel mode %d", int(o.Channels))
	}
	return o, nil
}

// String describes the setting, defaults resolved, for reports.
func (o SSIMOptions) String() string {
	r, err := o.Resolved()
	if err != nil {
		return "invalid SSIM setting: " + err.Error()
	}
	win := fmt.Sprintf("%d×%d Gaussian window σ=%g", r.WindowSize, r.WindowSize, r.Sigma)
	if r.Uniform {
		win = fmt.Sprintf("%d×%d uniform window", r.WindowSize, r.WindowSize)
	}
	return fmt.Sprintf("%s, K1=%g, K2=%g, L=%g, %s", win, r.K1, r.K2, r.L, r.Channels)
}

// window returns the 1-D weights whose outer product is the 2-D window:
// both the Gaussian and the uniform window are separable, and normalizing
// the 1-D weights to sum 1 normalizes the 2-D window too.
func (o SSIMOptions) window() []float64 {
	w := make([]float64, o.WindowSize)
	c := float64(o.WindowSize-1) / 2
	var sum float64
	for i := range w {
		if o.Uniform {
			w[i] = 1
		} else {
			d := float64(i) - c
			w[i] = math.Exp(-d * d / (2 * o.Sigma * o.Sigma))
		}
		sum += w[i]
	}
	for i := range w {
		w[i] /= sum
	}
	return w
}

// plane is one channel as float64 samples, row-major.
type plane struct {
	w, h int
	v    []float64
}

// planes splits an RGB image into the planes SSIM compares.
func planes(m *imageproc.RGB, ch Channels) []plane {
	n := m.Width * m.Height
	if ch == Luma {
		p := plane{m.Width, m.Height, make([]float64, n)}
		for i := range p.v {
			p.v[i] = 0.299*float64(m.Pix[3*i]) + 0.587*float64(m.Pix[3*i+1]) + 0.114*float64(m.Pix[3*i+2])
		}
		return []plane{p}
	}
	out := make([]plane, 3)
	for c := range out {
		out[c] = plane{m.Width, m.Height, make([]float64, n)}
		for i := range out[c].v {
			out[c].v[i] = float64(m.Pix[3*i+c])
		}
	}
	return out
}

// SSIM returns the mean structural similarity of b against a (Wang et al.
// 2004, eq. 13 and 17): for every position of the window that lies wholly
// inside the image (MATLAB's filter2 'valid', as the authors' ssim_index.m
// computes it), with weighted means μ, variances σ² and covariance σxy
// (weights summing to 1, so no N−1 correction),
//
//	SSIM = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
//
// averaged over positions, then over channels for PerChannel. Identical
// images give exactly 1. An image smaller than the window is an error: no
// window position fits.
func SSIM(a, b *imageproc.RGB, opts SSIMOptions) (float64, error) {
	o, err := opts.Resolved()
	if err != nil {
		return 0, err
	}
	if err := sameSize(a, b); err != nil {
		return 0, err
	}
	if a.Width < o.WindowSize || a.Height < o.WindowSize {
		return 0, fmt.Errorf("metrics: SSIM of %dx%d images: smaller than the %d×%d window", a.Width, a.Height, o.WindowSize, o.WindowSize)
	}
	win := o.window()
	c1, c2 := (o.K1*o.L)*(o.K1*o.L), (o.K2*o.L)*(o.K2*o.L)
	pa, pb := planes(a, o.Channels), planes(b, o.Channels)
	var sum float64
	for i := range pa {
		s, _ := ssimPlane(pa[i], pb[i], win, c1, c2)
		sum += s
	}
	return sum / float64(len(pa)), nil
}

// ssimPlane returns the mean SSIM and the mean contrast-structure term
// cs = (2·σxy + C2)/(σx² + σy² + C2) over the valid window positions.
func ssimPlane(x, y plane, win []float64, c1, c2 float64) (ssim, cs float64) {
	n := len(x.v)
	xx, yy, xy := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range x.v {
		xx[i] = x.v[i] * x.v[i]
		yy[i] = y.v[i] * y.v[i]
		xy[i] = x.v[i] * y.v[i]
	}
	mx, ow, oh := filterValid(x.v, x.w, x.h, win)
	my, _, _ := filterValid(y.v, x.w, x.h, win)
	exx, _, _ := filterValid(xx, x.w, x.h, win)
	eyy, _, _ := filterValid(yy, x.w, x.h, win)
	exy, _, _ := filterValid(xy, x.w, x.h, win)
	for i := range mx {
		ux, uy := mx[i], my[i]
		vx := exx[i] - ux*ux
		vy := eyy[i] - uy*uy
		cov := exy[i] - ux*uy
		l := (2*ux*uy + c1) / (ux*ux + uy*uy + c1)
		c := (2*cov + c2) / (vx + vy + c2)
		ssim += l * c
		cs += c
	}
	k := float64(ow * oh)
	return ssim / k, cs / k
}

// filterValid correlates a w×h plane with the separable window win⊗win,
// keeping only the positions where the window fits: the result is
// (w−k+1)×(h−k+1).
func filterValid(v []float64, w, h int, win []float64) ([]float64, int, int) {
	k := len(win)
	ow, oh := w-k+1, h-k+1
	rows := make([]float64, ow*h)
	for y := 0; y < h; y++ {
		src := v[y*w : (y+1)*w]
		dst := rows[y*ow : (y+1)*ow]
		for x := range dst {
			var s float64
			for i, wt := range win {
				s += wt * src[x+i]
			}
			dst[x] = s
		}
	}
	out := make([]float64, ow*oh)
	for y := 0; y < oh; y++ {
		dst := out[y*ow : (y+1)*ow]
		for i, wt := range win {
			src := rows[(y+i)*ow : (y+i+1)*ow]
			for x := range dst {
				dst[x] += wt * src[x]
			}
		}
	}
	return out, ow, oh
}

// msssimWeights are the exponents of Wang et al. 2003, finest scale first.
var msssimWeights = [...]float64{0.0448, 0.2856, 0.3001, 0.2363, 0.1333}

// MaxScales is the number of scales of standard MS-SSIM.
const MaxScales = len(msssimWeights)

// MSSSIMScales returns how many scales MS-SSIM can use on a width×height
// image with the given window side: up to MaxScales, fewer when the image,
// halved at each scale, would become smaller than the window (a 64×64 image
// with the 11-pixel window has 3: 64, 32 and 16 pixels). It is 0 when not
// even the full-size image fits the window.
func MSSSIMScales(width, height, window int) int {
	n := 0
	for n < MaxScales && min(width, height)>>n >= window && window > 0 {
		n++
	}
	return n
}

// MSSSIMResult is a multi-scale SSIM value with the scales it used.
type MSSSIMResult struct {
	Value float64
	// Scales is the number of scales used (MaxScales unless the image is
	// too small for them).
	Scales int
	// Weights are the exponents used, finest scale first: Wang et al.'s
	// five, or their first Scales renormalized to sum to 1.
	Weights []float64
}

// MSSSIM returns the multi-scale structural similarity of b against a
// (Wang et al. 2003, eq. 7), as the authors' msssim.m computes it: at each
// scale j = 1..M the mean contrast-structure term cs_j; at the coarsest
// scale the mean SSIM (luminance included); then
//
//	MS-SSIM = SSIM_M^w_M · Π_{j<M} cs_j^w_j,
//
// with w = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]. Between scales the
// planes are downsampled 2× by 2×2 average pooling (an odd last row or
// column is dropped). Images too small for five scales use fewer (see
// MSSSIMScales) with the first weights renormalized to sum to 1, so the
// value stays on the same 0..1 scale; Result.Scales says how many. A
// negative cs or SSIM (anti-correlated structure) is clamped to 0 before
// exponentiation, as pytorch-msssim does, since a fractional power of a
// negative number is undefined. PerChannel averages the per-channel values.
func MSSSIM(a, b *imageproc.RGB, opts SSIMOptions) (MSSSIMResult, error) {
	o, err := opts.Resolved()
	if err != nil {
		return MSSSIMResult{}, err
	}
	if err := sameSize(a, b); err != nil {
		return MSSSIMResult{}, err
	}
	m := MSSSIMScales(a.Width, a.Height, o.WindowSize)
	if m == 0 {
		return MSSSIMResult{}, fmt.Errorf("metrics: MS-SSIM of %dx%d images: smaller than the %d×%d window", a.Width, a.Height, o.WindowSize, o.WindowSize)
	}
	weights := make([]float64, m)
	var total float64
	for j := range weights {
		weights[j] = msssimWeights[j]
		total += weights[j]
	}
	if m < MaxScales {
		for j := range weights {
			weights[j] /= total
		}
	}
	win := o.window()
	c1, c2 := (o.K1*o.L)*(o.K1*o.L), (o.K2*o.L)*(o.K2*o.L)
	pa, pb := planes(a, o.Channels), planes(b, o.Channels)
	var sum float64
	for i := range pa {
		x, y := pa[i], pb[i]
		v := 1.0
		for j := 0; j < m; j++ {
			ssim, cs := ssimPlane(x, y, win, c1, c2)
			term := cs
			if j == m-1 {
				term = ssim
			}
			v *= math.Pow(max(term, 0), weights[j])
			if j < m-1 {
				x, y = halve(x), halve(y)
			}
		}
		sum += v
	}
	return MSSSIMResult{Value: sum / float64(len(pa)), Scales: m, Weights: weights}, nil
}

// halve is 2×2 average pooling with stride 2.
func halve(p plane) plane {
	w, h := p.w/2, p.h/2
	out := plane{w, h, make([]float64, w*h)}
	for y := 0; y < h; y++ {
		r0 := p.v[2*y*p.w:]
		r1 := p.v[(2*y+1)*p.w:]
		for x := 0; x < w; x++ {
			out.v[y*w+x] = (r0[2*x] + r0[2*x+1] + r1[2*x] + r1[2*x+1]) / 4
		}
	}
	return out
}
