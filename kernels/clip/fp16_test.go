package clip

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// halfSource serves a source's float32 tensors rounded to fp16.
type halfSource struct{ nn.Source }

func (h halfSource) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	dt, shape, data, err := h.Source.Tensor(name)
	if err != nil || dt != safetensors.F32 {
		return dt, shape, data, err
	}
	out := make([]byte, len(data)/2)
	for i := range len(data) / 4 {
		binary.LittleEndian.PutUint16(out[2*i:], safetensors.Float32ToHalf(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))))
	}
	return safetensors.F16, slices.Clone(shape), out, nil
}

// With fp16 weights kept as stored, embedding rows are gathered in fp16 and
// widened after: exactly what widening the whole table first gives.
func TestKeepStoredMatchesWiden(t *testing.T) {
	f := openFixture(t)
	src := halfSource{nn.FileSource{File: f.ckpt}}
	encode := func(p nn.Precision) []float32 {
		enc, err := NewEncoder(f.model, nn.NewWeights(f.weights.Backend(), src, p), f.batch, f.tokens, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		out, err := enc.Encode(f.ids32())
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if kept, widened := encode(nn.KeepStored), encode(nn.Widen); !slices.Equal(kept, widened) {
		t.Error("fp16 weights kept as stored encode differently from the same weights widened at load")
	}
}
