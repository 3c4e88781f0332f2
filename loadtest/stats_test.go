package loadtest

import (
	"math"
	"testing"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		p      float64
		want   float64
	}{
		{"one value", []float64{7}, 50, 7},
		{"one value p99", []float64{7}, 99, 7},
		{"min", []float64{3, 1, 2}, 0, 1},
		{"max", []float64{3, 1, 2}, 100, 3},
		// k = (3-1)*0.5 = 1: the middle value.
		{"odd median", []float64{30, 10, 20}, 50, 20},
		// k = (4-1)*0.5 = 1.5: halfway between 20 and 30.
		{"even median", []float64{40, 10, 30, 20}, 50, 25},
		// k = (5-1)*0.9 = 3.6: 40 + 0.6*(50-40).
		{"p90 of five", []float64{10, 20, 30, 40, 50}, 90, 46},
		// k = (5-1)*0.99 = 3.96: 40 + 0.96*10.
		{"p99 of five", []float64{50, 40, 30, 20, 10}, 99, 49.6},
		// k = (10-1)*0.9 = 8.1: 9 + 0.1*(100-9).
		{"outlier", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 100}, 90, 18.1},
		// k = (4-1)*0.25 = 0.75.
		{"p25", []float64{0, 4, 8, 12}, 25, 3},
		{"ties", []float64{5, 5, 5, 5}, 90, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Percentile(tt.values, tt.p)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.values, tt.p, got, tt.want)
			}
		})
	}
}

func TestPercentileInvalid(t *testing.T) {
	for _, tt := range []struct {
		values []float64
		p      float64
	}{{nil, 50}, {[]float64{1}, -1}, {[]float64{1}, 101}, {[]float64{1}, math.NaN()}} {
		if got := Percentile(tt.values, tt.p); !math.IsNaN(got) {
			t.Errorf("Percentile(%v, %v) = %v, want NaN", tt.values, tt.p, got)
		}
	}
}

func TestPercentileKeepsInput(t *testing.T) {
	in := []float64{3, 1, 2}
	Percentile(in, 50)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("input reordered: %v", in)
	}
}

func TestSummarize(t *testing.T) {
	if s := Summarize(nil); s != nil {
		t.Errorf("Summarize(nil) = %+v, want nil", s)
	}
	got := *Summarize([]float64{10, 20, 30, 40, 50})
	want := Summary{Count: 5, Min: 10, Mean: 30, P50: 30, P90: 46, P99: 49.6, Max: 50}
	const eps = 1e-9
	if got.Count != want.Count || math.Abs(got.Min-want.Min) > eps || math.Abs(got.Mean-want.Mean) > eps ||
		math.Abs(got.P50-want.P50) > eps || math.Abs(got.P90-want.P90) > eps ||
		math.Abs(got.P99-want.P99) > eps || math.Abs(got.Max-want.Max) > eps {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
}
