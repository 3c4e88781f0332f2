package metrics

import (
	"math"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// PeakValue is L, the dynamic range of 8-bit samples.
const PeakValue = 255

// PSNR returns the peak signal-to-noise ratio of b against a in decibels,
//
//	PSNR = 20·log10(L / √MSE),  MSE = mean over every pixel and channel of (a − b)²,
//
// with L = 255. Identical images have no noise: the result is +Inf, which
// callers report as such rather than as a large finite number. The
// √MSE form keeps a constant offset d exact: PSNR = 20·log10(255/d).
func PSNR(a, b *imageproc.RGB) (float64, error) {
	if err := sameSize(a, b); err != nil {
		return 0, err
	}
	var sum float64
	for i, v := range a.Pix {
		d := float64(v) - float64(b.Pix[i])
		sum += d * d
	}
	if sum == 0 {
		return math.Inf(1), nil
	}
	mse := sum / float64(len(a.Pix))
	return 20 * math.Log10(PeakValue/math.Sqrt(mse)), nil
}
