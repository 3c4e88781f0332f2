// Package fma provides a float32 fused multiply-add that rounds once, as
// the SIMD code of torch's CPU kernels does. Matching torch bit for bit
// (seeded noise, scheduler tables) depends on which steps fuse.
package fma

import "math"

// F32 is a*b+c rounded once to float32. The float32 product is exact in
// float64; the float64 sum is rounded to odd (its last bit forced on when
// inexact) so that the final conversion to float32 cannot double-round.
func F32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	cc := float64(c)
	s := p + cc
	// Knuth's TwoSum: s + e is exactly p + cc.
	v := s - p
	e := (p - (s - v)) + (cc - v)
	if bits := math.Float64bits(s); e != 0 && bits&1 == 0 {
		// Inexact and even: step to the odd neighbour on the side of the
		// exact value (s is not zero: sums that round to zero are exact).
		if (e > 0) == (s > 0) {
			bits++
		} else {
			bits--
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}
