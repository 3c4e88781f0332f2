package fma

import (
	"math"
	"testing"
)

func TestFMA32(t *testing.T) {
	tests := []struct {
		a, b, c, want float32
	}{
		{2, 3, 4, 10},
		{-1.5, 2, 0.25, -2.75},
		{0, 5, -0, 0},
		// a*b+c lies just below a float32 tie: rounding the sum to float64
		// first lands on the tie and then on the wrong (even) neighbour.
		{8 * (1 + 0x1p-23), 8 * (1 - 0x1p-23), 0x1p30 + 0x1p7, 0x1p30 + 0x1p7},
		// Just above a tie.
		{8 * (1 + 0x1p-23), 8 * (1 + 0x1p-23), 0x1p30, 0x1p30 + 0x1p7},
		// Exact cancellation leaves the product's low bits.
		{1 + 0x1p-12, 1 + 0x1p-12, -1, 0x1p-11 + 0x1p-24},
	}
	for _, tt := range tests {
		if got := F32(tt.a, tt.b, tt.c); math.Float32bits(got) != math.Float32bits(tt.want) {
			t.Errorf("F32(%g, %g, %g) = %g, want %g", tt.a, tt.b, tt.c, got, tt.want)
		}
	}
}
