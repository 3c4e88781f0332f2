// Package noise draws the initial latents of a generation: it turns a seed
// into the same Gaussian noise that torch.randn draws from a CPU generator,
// so a seed copied from a diffusers notebook gives the same picture here.
//
// A Generator reproduces torch.Generator("cpu") after manual_seed: the
// Mersenne Twister stream, torch's uniform-to-float mapping and the two
// normal samplers torch 1.13 picks between by tensor size.
package noise

import (
	"fmt"
	"math"
)

// Generator is a seeded random stream with torch's CPU generator semantics.
// Successive draws continue the stream exactly as successive torch calls on
// one generator do. A Generator is not safe for concurrent use.
type Generator struct {
	mt   mt19937
	seed uint64

	// torch caches the second value of each double-precision Box-Muller
	// pair drawn by its scalar sampler and hands it out on the next
	// scalar draw, even one made by a later call.
	nextNormal    float64
	hasNextNormal bool
}

// NewGenerator returns a generator in the state of
// torch.Generator("cpu").manual_seed(seed).
func NewGenerator(seed uint64) *Generator {
	g := new(Generator)
	g.Seed(seed)
	return g
}

// Seed resets g as manual_seed does, dropping any cached normal sample.
// Only the low 32 bits of seed affect the stream.
func (g *Generator) Seed(seed uint64) {
	g.seed = seed
	g.mt.seed(seed)
	g.hasNextNormal = false
	g.nextNormal = 0
}

// InitialSeed returns the seed g was last seeded with, as
// torch.Generator.initial_seed does.
func (g *Generator) InitialSeed() uint64 { return g.seed }

// Uint32 returns the next 32 bits of the stream (torch's random()).
func (g *Generator) Uint32() uint32 { return g.mt.uint32() }

// Uint64 returns the next 64 bits of the stream (torch's random64()): two
// 32-bit draws, the first one high.
func (g *Generator) Uint64() uint64 {
	hi := g.mt.uint32()
	lo := g.mt.uint32()
	return uint64(hi)<<32 | uint64(lo)
}

// float32 is torch's uniform_real_distribution<float>(0, 1): the low 24
// bits of one 32-bit draw scaled by 2^-24, exactly representable.
func (g *Generator) float32() float32 {
	return float32(g.mt.uint32()&(1<<24-1)) * (1.0 / (1 << 24))
}

// float64 is torch's uniform_real_distribution<double>(0, 1): the low 53
// bits of a 64-bit draw scaled by 2^-53.
func (g *Generator) float64() float64 {
	return float64(g.Uint64()&(1<<53-1)) * (1.0 / (1 << 53))
}

// normal64 is torch's scalar normal_distribution<double>: a Box-Muller pair
// in double precision whose sine half is cached for the next call.
func (g *Generator) normal64() float64 {
	if g.hasNextNormal {
		g.hasNextNormal = false
		return g.nextNormal
	}
	u1 := g.float64()
	u2 := g.float64()
	r := math.Sqrt(-2 * math.Log(1-u2))
	theta := 2 * math.Pi * u1
	g.nextNormal = r * math.Sin(theta)
	g.hasNextNormal = true
	return r * math.Cos(theta)
}

// Rand returns a tensor of the given shape (row-major) filled with uniform
// samples in [0, 1), as torch.rand(shape, generator=g) draws them.
func (g *Generator) Rand(shape ...int) []float32 {
	out := make([]float32, numElements(shape))
	g.FillRand(out)
	return out
}

// FillRand fills dst as Rand does for a tensor of len(dst) elements.
func (g *Generator) FillRand(dst []float32) {
	for i := range dst {
		dst[i] = g.float32()
	}
}

// Randn returns a tensor of the given shape (row-major) filled with standard
// normal samples, as torch.randn(shape, generator=g, dtype=torch.float32)
// draws them. An empty shape is a scalar.
func (g *Generator) Randn(shape ...int) []float32 {
	out := make([]float32, numElements(shape))
	g.FillRandn(out)
	return out
}

// FillRandn fills dst as Randn does for a tensor of len(dst) elements. torch
// draws differently depending on the element count, so filling a slice in
// pieces does not give the same numbers as filling it at once.
func (g *Generator) FillRandn(dst []float32) {
	n := len(dst)
	if n < 16 {
		// torch's serial kernel: one double-precision sample per element,
		// consuming and refilling the generator's cached sample.
		// torch returns sample*std + mean with std 1 and mean 0; the +0
		// keeps its -0 to +0 mapping.
		for i := range dst {
			dst[i] = float32(g.normal64() + 0)
		}
		return
	}
	// torch's vectorised kernel: all uniforms first, then Box-Muller over
	// blocks of 16.
	for i := range dst {
		dst[i] = g.float32()
	}
	for i := 0; i+16 <= n; i += 16 {
		boxMuller16(dst[i : i+16])
	}
	if n%16 != 0 {
		// The ragged tail is redone as a full block over the last 16
		// elements with 16 fresh uniforms, overwriting normals already
		// computed there.
		tail := dst[n-16:]
		for i := range tail {
			tail[i] = g.float32()
		}
		boxMuller16(tail)
	}
}

// numElements is the product of shape, panicking as make does on a
// negative size.
func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("noise: negative dimension %d in shape %v", d, shape))
		}
		n *= d
	}
	return n
}
