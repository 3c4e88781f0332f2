package safetensors

import "math"

// HalfToFloat32 widens an IEEE 754 binary16 value exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default: // subnormal: value = mant · 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
}

// Float32ToHalf rounds to the nearest binary16 value, ties to even, as
// torch's .half() does. Values beyond the fp16 range become ±Inf; callers that
// must not overflow check with HalfOverflows first. A NaN stays a NaN with
// its sign and the top 10 bits of its payload (a payload that truncates to
// zero becomes the quiet bit), so Float32ToHalf(HalfToFloat32(h)) == h for
// every one of the 65536 values h.
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf or NaN
		if mant != 0 {
			m := uint16(mant >> 13)
			if m == 0 {
				m = 0x200
			}
			return sign | 0x7c00 | m
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal or zero in fp16: shift the implicit-one mantissa.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := m >> shift
		rem := m & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is still correct (up to Inf)
	}
	return sign | uint16(half)
}

// MaxHalf is the largest finite binary16 value.
const MaxHalf = 65504

// HalfOverflows reports whether f rounds to ±Inf in fp16 although it is finite.
func HalfOverflows(f float32) bool {
	if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
		return false
	}
	h := Float32ToHalf(f)
	return h&0x7fff == 0x7c00
}

// BF16ToFloat32 widens a bfloat16 value (the top half of a float32) exactly.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 rounds to the nearest bfloat16 value, ties to even, as torch
// does; a NaN stays a NaN (its payload truncated, made non-zero if needed).
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		h := uint16(b >> 16)
		if h&0x7f == 0 {
			h |= 0x40
		}
		return h
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// E4M3ToFloat32 widens a float8 e4m3fn value (torch.float8_e4m3fn: bias 7, no
// infinities, 0x7f and 0xff are NaN, largest finite ±448) exactly.
func E4M3ToFloat32(b uint8) float32 {
	sign := uint32(b>>7) << 31
	exp := uint32(b>>3) & 0xf
	mant := uint32(b) & 0x7
	switch {
	case exp == 0xf && mant == 0x7:
		return math.Float32frombits(sign | 0x7fc00000)
	case exp != 0:
		return math.Float32frombits(sign | (exp+120)<<23 | mant<<20)
	default: // zero or subnormal: mant · 2^-9
		f := float32(mant) * (1.0 / (1 << 9))
		if sign != 0 {
			f = -f
		}
		return f
	}
}
