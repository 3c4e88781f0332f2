package nn

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// RandomSource fabricates weights of given shapes, deterministic per name,
// for benchmarks and architecture tests of full-size models whose real
// checkpoints cannot be shipped. Matrices and kernels are uniform in
// ±1/√fan_in so activations stay in range through deep stacks; 1-d
// ".weight" tensors (norm scales) are near 1, biases near 0.
type RandomSource struct {
	Shapes map[string][]int
	DType  safetensors.DType // F32 (default) or F16
	Seed   uint64
}

// Has implements Source.
func (r RandomSource) Has(name string) bool {
	_, ok := r.Shapes[name]
	return ok
}

// Tensor implements Source.
func (r RandomSource) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	shape, ok := r.Shapes[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("random source: no weight %q", name)
	}
	dt := r.DType
	if dt == "" {
		dt = safetensors.F32
	}
	if dt != safetensors.F32 && dt != safetensors.F16 {
		return "", nil, nil, fmt.Errorf("random source: dtype %s not supported", dt)
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(r.Seed, h.Sum64()))
	n, fanIn := 1, 1
	for i, d := range shape {
		n *= d
		if i > 0 {
			fanIn *= d
		}
	}
	center, scale := float32(0), float32(1/math.Sqrt(float64(fanIn)))
	if len(shape) == 1 {
		scale = 0.05
		if strings.HasSuffix(name, ".weight") {
			center = 1
		}
	}
	data := make([]byte, n*dt.Size())
	for i := 0; i < n; i++ {
		v := center + scale*(2*rng.Float32()-1)
		if dt == safetensors.F16 {
			binary.LittleEndian.PutUint16(data[2*i:], safetensors.Float32ToHalf(v))
		} else {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
	}
	return dt, shape, data, nil
}
