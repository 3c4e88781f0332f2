package noise

import (
	"math"

	"github.com/controlfn/controlfn/kernels/internal/fma"
)

// This file reproduces, operation by operation, the float32 Box-Muller that
// torch 1.13 runs for float32 tensors of 16 or more elements on x86 CPUs
// (normal_fill_16_AVX2; AVX-512 machines use it too, as torch opts normal
// out of its AVX-512 dispatch). Its log and sincos are the Cephes-derived
// polynomials of avx_mathfun.h, not libm, so matching torch bit for bit
// means evaluating the same polynomials in the same order with float32
// rounding after every step.
//
// Two compilers shape the last bit and both are pinned down here:
//
//   - torch's kernel is built by GCC with -mfma and default fp-contract, so
//     a multiply whose only uses are adds becomes one vfmadd. Where a sum
//     has two products as operands GCC fuses the first one in statement
//     order. Those fused steps are written with fma.F32; the rest round
//     after each operation. The fused/unfused choice per step was checked
//     against every tensor of the golden noise_ref set: unfused evaluation
//     is off by up to 2 ulp in about 1% of values, this one matches all.
//   - Go may fuse x*y+z on its own (it does on arm64), so every product
//     that must round on its own is wrapped in an explicit float32
//     conversion, which the spec says prevents fusion.

// Constants of avx_mathfun.h, rounded to float32 as the C initialisers are.
const (
	cephesSQRTHF = float32(0.707106781186547524)
	logP0        = float32(7.0376836292e-2)
	logP1        = float32(-1.1514610310e-1)
	logP2        = float32(1.1676998740e-1)
	logP3        = float32(-1.2420140846e-1)
	logP4        = float32(+1.4249322787e-1)
	logP5        = float32(-1.6668057665e-1)
	logP6        = float32(+2.0000714765e-1)
	logP7        = float32(-2.4999993993e-1)
	logP8        = float32(+3.3333331174e-1)
	logQ1        = float32(-2.12194440e-4)
	logQ2        = float32(0.693359375)

	minusDP1   = float32(-0.78515625)
	minusDP2   = float32(-2.4187564849853515625e-4)
	minusDP3   = float32(-3.77489497744594108e-8)
	sincofP0   = float32(-1.9515295891e-4)
	sincofP1   = float32(8.3321608736e-3)
	sincofP2   = float32(-1.6666654611e-1)
	coscofP0   = float32(2.443315711809948e-005)
	coscofP1   = float32(-1.388731625493765e-003)
	coscofP2   = float32(4.166664568298827e-002)
	cephesFOPI = float32(1.27323954473516) // 4/pi

	// twoPi is 2*pi rounded to float32 from double, as torch's
	// _mm256_set1_ps(2.0f * c10::pi<double>) is.
	twoPi = float32(2 * math.Pi)
)

// log32 is avx_mathfun's log256_ps for one lane. Box-Muller only passes
// arguments in (0, 1]; the NaN for x <= 0 keeps the function total.
func log32(x float32) float32 {
	if !(x > 0) {
		return float32(math.NaN())
	}
	const minNormPos = 0x00800000
	bits := math.Float32bits(x)
	if bits < minNormPos {
		bits = minNormPos // the vector code clamps denormals away
	}
	e := float32(int32(bits>>23)-0x7f) + 1
	// Mantissa scaled into [0.5, 1).
	m := math.Float32frombits(bits&^0x7f800000 | 0x3f000000)
	if m < cephesSQRTHF {
		e -= 1
		m = (m - 1) + m
	} else {
		m = m - 1
	}
	z := float32(m * m)
	y := fma.F32(logP0, m, logP1)
	y = fma.F32(y, m, logP2)
	y = fma.F32(y, m, logP3)
	y = fma.F32(y, m, logP4)
	y = fma.F32(y, m, logP5)
	y = fma.F32(y, m, logP6)
	y = fma.F32(y, m, logP7)
	y = fma.F32(y, m, logP8)
	y = float32(y * m)
	y = fma.F32(y, z, float32(e*logQ1))
	y = y - float32(z*0.5)
	m = m + y
	return fma.F32(e, logQ2, m)
}

// sincos32 is avx_mathfun's sincos256_ps for one lane.
func sincos32(x float32) (sin, cos float32) {
	signSin := math.Float32bits(x) & 0x80000000
	x = math.Float32frombits(math.Float32bits(x) &^ 0x80000000)
	j := int32(float32(x * cephesFOPI)) // truncates, as cvttps does
	j = (j + 1) &^ 1
	y := float32(j)
	signSin ^= uint32(j&4) << 29
	sinPoly := j&2 == 0 // which polynomial gives the sine
	signCos := uint32(^(j-2)&4) << 29

	// Extended precision modular arithmetic: x - y*pi/4 in three parts.
	x = fma.F32(y, minusDP1, x)
	x = fma.F32(y, minusDP2, x)
	x = fma.F32(y, minusDP3, x)

	z := float32(x * x)
	c := fma.F32(coscofP0, z, coscofP1)
	c = fma.F32(c, z, coscofP2)
	c = float32(c * z)
	c = fma.F32(c, z, -float32(z*0.5))
	c = c + 1

	s := fma.F32(sincofP0, z, sincofP1)
	s = fma.F32(s, z, sincofP2)
	s = float32(s * z)
	s = fma.F32(s, x, x)

	// Select with the same subtractions and additions of masked zeros as
	// the vector code so that signed zeros come out the same.
	var sinFromS, sinFromC float32
	if sinPoly {
		sinFromS = s
	} else {
		sinFromC = c
	}
	s = s - sinFromS
	c = c - sinFromC
	sin = math.Float32frombits(math.Float32bits(sinFromC+sinFromS) ^ signSin)
	cos = math.Float32frombits(math.Float32bits(c+s) ^ signCos)
	return sin, cos
}

// boxMuller16 turns 16 uniforms in [0, 1) into 16 standard normals in place:
// lane j pairs data[j] (radius) with data[j+8] (angle), writing the cosine
// branch to j and the sine branch to j+8.
func boxMuller16(data []float32) {
	_ = data[15]
	for j := 0; j < 8; j++ {
		u1 := 1 - data[j] // (0, 1], away from log's pole
		u2 := data[j+8]
		// float32 sqrt via float64 is correctly rounded: 53 >= 2*24+2.
		radius := float32(math.Sqrt(float64(float32(-2 * log32(u1)))))
		sin, cos := sincos32(float32(twoPi * u2))
		// torch stores fmadd(n, std, mean) with std 1 and mean 0, which
		// only turns -0 into +0; adding +0 does the same.
		data[j] = float32(radius*cos) + 0
		data[j+8] = float32(radius*sin) + 0
	}
}
