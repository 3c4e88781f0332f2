package quantize

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

func f32Bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func halves(b []byte) []uint16 {
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

func TestToHalf(t *testing.T) {
	// 1, 65504 (max half), 2^-24 (smallest subnormal), 1e-9 (underflows),
	// 1+2^-11 (a tie: rounds to even, 1.0).
	in := f32Bytes(1, 65504, 0x1p-24, 1e-9, 1+0x1p-11, -2)
	out, st, err := ToHalf(safetensors.F32, in, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint16{0x3c00, 0x7bff, 0x0001, 0x0000, 0x3c00, 0xc000}
	got := halves(out)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("value %d: %#04x, want %#04x", i, got[i], want[i])
		}
	}
	if st.Values != 6 || st.Underflow != 1 || st.Overflow != 0 || st.MaxAbs != 65504 {
		t.Errorf("stats %+v", st)
	}
}

func TestToHalfOverflow(t *testing.T) {
	in := f32Bytes(1, 70000, -1e6)
	if _, st, err := ToHalf(safetensors.F32, in, false); !errors.Is(err, ErrOverflow) || st.Overflow != 2 {
		t.Errorf("no clamp: err %v, stats %+v", err, st)
	}
	out, st, err := ToHalf(safetensors.F32, in, true)
	if err != nil || st.Overflow != 2 {
		t.Fatalf("clamp: err %v, stats %+v", err, st)
	}
	if got := halves(out); got[1] != 0x7bff || got[2] != 0xfbff {
		t.Errorf("clamped to %#04x %#04x", got[1], got[2])
	}
	if _, _, err := ToHalf(safetensors.F32, f32Bytes(float32(math.NaN())), true); err == nil {
		t.Error("NaN accepted")
	}
	if _, _, err := ToHalf(safetensors.F16, []byte{0x00, 0x7c}, true); err == nil {
		t.Error("half Inf accepted")
	}
}
