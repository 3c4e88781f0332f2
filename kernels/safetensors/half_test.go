package safetensors

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// halfValue is the exact value of a binary16 bit pattern, computed in float64
// straight from the IEEE 754 definition.
func halfValue(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		if mant != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	case 0:
		return sign * mant * math.Ldexp(1, -24)
	}
	return sign * (1 + mant/1024) * math.Ldexp(1, exp-15)
}

func TestHalfToFloat32Known(t *testing.T) {
	for _, tc := range []struct {
		h    uint16
		want float64
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xbc00, -1},
		{0xc000, -2},
		{0x3c01, 1 + 1.0/1024},
		{0x3bff, 1 - 1.0/2048},
		{0x3555, 0.333251953125},
		{0x7bff, 65504},
		{0xfbff, -65504},
		{0x0400, math.Ldexp(1, -14)},        // smallest normal
		{0x03ff, 1023 * math.Ldexp(1, -24)}, // largest subnormal
		{0x0001, math.Ldexp(1, -24)},        // smallest subnormal
		{0x8001, -math.Ldexp(1, -24)},
		{0x7c00, math.Inf(1)},
		{0xfc00, math.Inf(-1)},
	} {
		if got := HalfToFloat32(tc.h); float64(got) != tc.want {
			t.Errorf("HalfToFloat32(%#04x) = %g, want %g", tc.h, got, tc.want)
		}
	}
	if got := math.Float32bits(HalfToFloat32(0x8000)); got != 0x80000000 {
		t.Errorf("HalfToFloat32(0x8000) bits = %#x, want -0", got)
	}
	for _, h := range []uint16{0x7c01, 0x7e00, 0x7fff, 0xfe00, 0xfc01} {
		if f := HalfToFloat32(h); !math.IsNaN(float64(f)) || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Errorf("HalfToFloat32(%#04x) = %g, want a NaN of the same sign", h, f)
		}
	}
}

func TestFloat32ToHalfKnown(t *testing.T) {
	ulp := func(x float64) float32 { return float32(x) }
	for _, tc := range []struct {
		f    float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{-65504, 0xfbff},
		{1.0 / 3, 0x3555},
		// Ties go to the even mantissa.
		{ulp(1 + math.Ldexp(1, -11)), 0x3c00},                      // halfway 0x3c00/0x3c01
		{ulp(1 + 3*math.Ldexp(1, -11)), 0x3c02},                    // halfway 0x3c01/0x3c02
		{ulp(1 + math.Ldexp(1, -11) + math.Ldexp(1, -20)), 0x3c01}, // just above the tie
		{ulp(1 + math.Ldexp(1, -11) - math.Ldexp(1, -20)), 0x3c00}, // just below the tie
		{2049, 0x6800},
		{2051, 0x6802},
		{-2049, 0xe800},
		// Subnormals and underflow.
		{ulp(math.Ldexp(1, -24)), 0x0001},
		{ulp(math.Ldexp(1, -25)), 0x0000},                            // tie 0/1 -> 0
		{ulp(math.Ldexp(1, -25) * (1 + math.Ldexp(1, -23))), 0x0001}, // above the tie
		{ulp(3 * math.Ldexp(1, -25)), 0x0002},                        // tie 1/2 -> 2
		{ulp(5 * math.Ldexp(1, -25)), 0x0002},                        // tie 2/3 -> 2
		{ulp(math.Ldexp(1, -26)), 0x0000},
		{ulp(-math.Ldexp(1, -26)), 0x8000},
		{ulp(1023.5 * math.Ldexp(1, -24)), 0x0400}, // tie into the smallest normal
		{ulp(1023 * math.Ldexp(1, -24)), 0x03ff},
		{math.SmallestNonzeroFloat32, 0x0000},
		{-math.SmallestNonzeroFloat32, 0x8000},
		// Overflow.
		{65519, 0x7bff},
		{65520, 0x7c00}, // tie 65504/65536 rounds to even: Inf
		{65536, 0x7c00},
		{1e10, 0x7c00},
		{-1e10, 0xfc00},
		{math.MaxFloat32, 0x7c00},
		{float32(math.Inf(1)), 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := Float32ToHalf(tc.f); got != tc.want {
			t.Errorf("Float32ToHalf(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
	for _, b := range []uint32{0x7fc00000, 0x7f800001, 0xffc00000, 0x7fffffff, 0x7f801fff} {
		h := Float32ToHalf(math.Float32frombits(b))
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 || (h&0x8000 != 0) != (b&0x80000000 != 0) {
			t.Errorf("Float32ToHalf(NaN %#x) = %#04x, want a NaN of the same sign", b, h)
		}
	}
}

// Every binary16 value widens exactly and narrows back to the same bits.
func TestHalfRoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := HalfToFloat32(h)
		want := halfValue(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("HalfToFloat32(%#04x) = %g, want NaN", h, f)
			}
		} else if float64(f) != want || math.Signbit(float64(f)) != math.Signbit(want) {
			t.Fatalf("HalfToFloat32(%#04x) = %g, want %g", h, f, want)
		}
		if back := Float32ToHalf(f); back != h {
			t.Fatalf("Float32ToHalf(HalfToFloat32(%#04x)) = %#04x", h, back)
		}
		if HalfOverflows(f) {
			t.Fatalf("HalfOverflows(%g) for a half value", f)
		}
	}
}

// Between every two adjacent finite halves, the midpoint rounds to the even
// one and anything off the midpoint to the nearer one.
func TestFloat32ToHalfMidpoints(t *testing.T) {
	for _, sign := range []uint16{0, 0x8000} {
		for h := uint16(0); h < 0x7c00; h++ {
			lo, hi := HalfToFloat32(sign|h), HalfToFloat32(sign|(h+1)) // h+1 == 0x7c00 is Inf
			var mid float32
			if h+1 == 0x7c00 {
				mid = float32(math.Copysign(65520, float64(lo)))
			} else {
				mid = (lo + hi) / 2 // exact: float32 has 13 more bits
			}
			even := sign | h
			if h&1 == 1 {
				even = sign | (h + 1)
			}
			if got := Float32ToHalf(mid); got != even {
				t.Fatalf("Float32ToHalf(%g, midpoint of %#04x) = %#04x, want %#04x", mid, sign|h, got, even)
			}
			below := math.Nextafter32(mid, lo)
			above := math.Nextafter32(mid, hi)
			if h+1 == 0x7c00 {
				above = math.Nextafter32(mid, float32(math.Inf(int(1-2*int(sign>>15)))))
			}
			if got := Float32ToHalf(below); got != sign|h {
				t.Fatalf("Float32ToHalf(%g) = %#04x, want %#04x", below, got, sign|h)
			}
			if got := Float32ToHalf(above); got != sign|(h+1) {
				t.Fatalf("Float32ToHalf(%g) = %#04x, want %#04x", above, got, sign|(h+1))
			}
		}
	}
}

// Random float32 bit patterns round to a nearest half.
func TestFloat32ToHalfNearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.Abs(float64(f)) >= 65520 {
			continue
		}
		h := Float32ToHalf(f)
		d := math.Abs(halfValue(h) - float64(f))
		for _, n := range []uint16{h - 1, h + 1} {
			if n&0x7fff > 0x7bff || (h&0x7fff == 0 && n&0x7fff == 0x7fff) {
				continue
			}
			if dn := math.Abs(halfValue(n) - float64(f)); dn < d {
				t.Fatalf("Float32ToHalf(%g) = %#04x, but %#04x is nearer", f, h, n)
			}
		}
	}
}

func TestHalfOverflows(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		want bool
	}{
		{0, false}, {65504, false}, {-65504, false}, {65519, false},
		{65520, true}, {-65520, true}, {1e5, true}, {math.MaxFloat32, true},
		{float32(math.Inf(1)), false}, {float32(math.NaN()), false},
	} {
		if got := HalfOverflows(tc.f); got != tc.want {
			t.Errorf("HalfOverflows(%g) = %v", tc.f, got)
		}
	}
}

func TestBF16(t *testing.T) {
	for _, tc := range []struct {
		h    uint16
		want float64
	}{
		{0x3f80, 1}, {0xc0a0, -5}, {0x4049, 3.140625}, {0x0000, 0},
		{0x7f7f, 3.3895313892515355e38}, {0x0080, math.Ldexp(1, -126)}, {0x0001, math.Ldexp(1, -133)},
		{0x7f80, math.Inf(1)}, {0xff80, math.Inf(-1)},
	} {
		if got := BF16ToFloat32(tc.h); float64(got) != tc.want {
			t.Errorf("BF16ToFloat32(%#04x) = %g, want %g", tc.h, got, tc.want)
		}
	}
	if !math.IsNaN(float64(BF16ToFloat32(0x7fc0))) {
		t.Error("BF16 0x7fc0 is not NaN")
	}
	// Decoding a BF16 tensor through DecodeFloat32 gives the same values.
	raw := binary.LittleEndian.AppendUint16(nil, 0x3f80)
	raw = binary.LittleEndian.AppendUint16(raw, 0xc0a0)
	raw = binary.LittleEndian.AppendUint16(raw, 0x4049)
	got, err := DecodeFloat32(raw, BF16)
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != -5 || got[2] != 3.140625 {
		t.Errorf("DecodeFloat32(BF16) = %v, %v", got, err)
	}
	for _, tc := range []struct {
		f    float64
		want uint16
	}{
		{1, 0x3f80},
		{1 + math.Ldexp(1, -8), 0x3f80},   // tie -> even
		{1 + 3*math.Ldexp(1, -8), 0x3f82}, // tie -> even
		{1 + math.Ldexp(1, -8) + math.Ldexp(1, -20), 0x3f81},
		{math.MaxFloat32, 0x7f80},
		{math.Inf(-1), 0xff80},
	} {
		if got := Float32ToBF16(float32(tc.f)); got != tc.want {
			t.Errorf("Float32ToBF16(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
	for i := 0; i < 1<<16; i++ {
		if back := Float32ToBF16(BF16ToFloat32(uint16(i))); back != uint16(i) {
			t.Fatalf("BF16 %#04x round-trips to %#04x", i, back)
		}
	}
	if h := Float32ToBF16(math.Float32frombits(0x7f800001)); h&0x7f80 != 0x7f80 || h&0x7f == 0 {
		t.Errorf("Float32ToBF16(NaN) = %#04x", h)
	}
}

func TestFloat8(t *testing.T) {
	for i := 0; i < 256; i++ {
		b := uint8(i)
		sign := 1.0
		if b&0x80 != 0 {
			sign = -1
		}
		exp, mant := int(b>>3)&0xf, float64(b&7)
		var want float64
		switch {
		case exp == 15 && mant == 7:
			want = math.NaN()
		case exp == 0:
			want = sign * mant * math.Ldexp(1, -9)
		default:
			want = sign * (1 + mant/8) * math.Ldexp(1, exp-7)
		}
		got := float64(E4M3ToFloat32(b))
		if math.IsNaN(want) != math.IsNaN(got) || (!math.IsNaN(want) && (got != want || math.Signbit(got) != math.Signbit(want))) {
			t.Errorf("E4M3ToFloat32(%#02x) = %g, want %g", b, got, want)
		}
	}
	if E4M3ToFloat32(0x7e) != 448 || E4M3ToFloat32(0x38) != 1 || E4M3ToFloat32(0x01) != 1.0/512 {
		t.Error("E4M3 landmarks")
	}
	got, err := DecodeFloat32([]byte{0x3c, 0x7b, 0x01, 0xc0, 0x7c}, F8E5M2)
	want := []float64{1, 57344, math.Ldexp(1, -16), -2, math.Inf(1)}
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if float64(got[i]) != want[i] {
			t.Errorf("E5M2 %d: %g, want %g", i, got[i], want[i])
		}
	}
}
