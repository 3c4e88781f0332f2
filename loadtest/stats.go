package loadtest

import (
	"math"
	"slices"
)

// Percentile returns the p-th percentile (0 <= p <= 100) of values by
// linear interpolation between the closest ranks: the k = (n-1)·p/100
// -th smallest value, interpolated when k is not whole (NumPy's default,
// Hyndman and Fan's type 7). Unlike nearest rank, it does not jump by a
// whole sample as n grows, so p99 of 50 samples is not simply the maximum.
// It returns NaN for no values or p out of range. values need not be
// sorted and are not modified.
func Percentile(values []float64, p float64) float64 {
	if len(values) == 0 || p < 0 || p > 100 || math.IsNaN(p) {
		return math.NaN()
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return percentileSorted(sorted, p)
}

func percentileSorted(sorted []float64, p float64) float64 {
	k := float64(len(sorted)-1) * p / 100
	lo := int(math.Floor(k))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := k - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// Summary describes a set of latencies in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize returns the summary of values, or nil when there are none (a
// summary of nothing has no honest numbers, and JSON cannot hold NaN).
func Summarize(values []float64) *Summary {
	if len(values) == 0 {
		return nil
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	var sum float64
	for _, v := range sorted {
		sum += v
	}
	// Microseconds are below what a loopback measurement resolves; the
	// rounding keeps the JSON readable.
	return &Summary{
		Count: len(sorted),
		Min:   round3(sorted[0]),
		Mean:  round3(sum / float64(len(sorted))),
		P50:   round3(percentileSorted(sorted, 50)),
		P90:   round3(percentileSorted(sorted, 90)),
		P99:   round3(percentileSorted(sorted, 99)),
		Max:   round3(sorted[len(sorted)-1]),
	}
}
