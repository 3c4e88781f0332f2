// Package quantize casts merged weights to float16 for the bundle, the
// compiler's step between LoRA merging and writing: round to nearest even,
// as torch's .half() does, with every value that would overflow fp16's
// range counted (and refused, or clamped when asked), because a silent Inf
// in a weight ruins every image.
package quantize

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Stats counts what a cast did.
type Stats struct {
	Tensors   int
	Values    int64
	Overflow  int64   // finite values beyond ±65504 (clamped, or the cast failed)
	Underflow int64   // non-zero values that became zero
	MaxAbs    float32 // largest magnitude seen
}

// Add accumulates another tensor's stats.
func (s *Stats) Add(o Stats) {
	s.Tensors += o.Tensors
	s.Values += o.Values
	s.Overflow += o.Overflow
	s.Underflow += o.Underflow
	s.MaxAbs = max(s.MaxAbs, o.MaxAbs)
}

// ErrOverflow is wrapped by ToHalf when values exceed fp16's range and
// clamping was not asked for.
var ErrOverflow = fmt.Errorf("values overflow float16 (max %g)", float32(safetensors.MaxHalf))

// ToHalf converts little-endian floating-point bytes of dtype dt to fp16.
// NaN or Inf in the input is an error (a corrupt checkpoint). Values beyond
// ±65504 are an error wrapping ErrOverflow unless clamp is set, in which
// case they saturate.
func ToHalf(dt safetensors.DType, data []byte, clamp bool) ([]byte, Stats, error) {
	var st Stats
	st.Tensors = 1
	if dt == safetensors.F16 {
		// Already half: check it, keep the bytes.
		st.Values = int64(len(data) / 2)
		for i := 0; i+1 < len(data); i += 2 {
			h := binary.LittleEndian.Uint16(data[i:])
			if h&0x7c00 == 0x7c00 {
				return nil, st, fmt.Errorf("value %d is NaN or Inf", i/2)
			}
			st.MaxAbs = max(st.MaxAbs, float32(math.Abs(float64(safetensors.HalfToFloat32(h)))))
		}
		return data, st, nil
	}
	vals, err := safetensors.DecodeFloat32(data, dt)
	if err != nil {
		return nil, st, err
	}
	st.Values = int64(len(vals))
	out := make([]byte, 2*len(vals))
	for i, v := range vals {
		a := float32(math.Abs(float64(v)))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, st, fmt.Errorf("value %d is %v", i, v)
		}
		st.MaxAbs = max(st.MaxAbs, a)
		h := safetensors.Float32ToHalf(v)
		if h&0x7fff == 0x7c00 {
			st.Overflow++
			if !clamp {
				continue
			}
			h = h&0x8000 | 0x7bff
		}
		if h&0x7fff == 0 && v != 0 {
			st.Underflow++
		}
		binary.LittleEndian.PutUint16(out[2*i:], h)
	}
	if st.Overflow > 0 && !clamp {
		return nil, st, fmt.Errorf("%d values (max |x| %g): %w", st.Overflow, st.MaxAbs, ErrOverflow)
	}
	return out, st, nil
}
