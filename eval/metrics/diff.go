package metrics

import (
	"fmt"
	"math"
)

// Diff is the element-wise absolute difference of two vectors.
type Diff struct {
	// Max is the largest |a−b|; Mean the average |a−b|. A non-finite
	// element makes both non-finite: a broken latent must not hide.
	Max, Mean float64
	// RefMaxAbs is the largest |a|, the scale Max is read against.
	RefMaxAbs float64
}

// AbsDiff compares b with the reference a (latents of the reference and
// the optimized model), which must have the same, non-zero length.
func AbsDiff(a, b []float32) (Diff, error) {
	if len(a) != len(b) || len(a) == 0 {
		return Diff{}, fmt.Errorf("metrics: cannot compare vectors of %d and %d values", len(a), len(b))
	}
	var d Diff
	var sum float64
	for i, v := range a {
		e := math.Abs(float64(v) - float64(b[i]))
		// math.Max propagates NaN where a plain comparison would skip it.
		d.Max = math.Max(d.Max, e)
		d.RefMaxAbs = math.Max(d.RefMaxAbs, math.Abs(float64(v)))
		sum += e
	}
	d.Mean = sum / float64(len(a))
	return d, nil
}
