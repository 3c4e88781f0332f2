// Package nn holds the building blocks every model in kernels/ is made of:
// binding checkpoint weights to graph parameters by their diffusers names,
// compiling and running a program on a GoMLX backend, and the layers
// (convolution, normalization, attention, ...) with a lowering chosen per
// backend.
//
// Activations are NHWC inside every graph: the Go backend's fastest 3×3
// convolution is im2col + matmul over channels-last data, and XLA handles any
// layout. Models convert from and to diffusers' NCHW at their boundaries.
package nn

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Source supplies stored weights by their diffusers names. It is what a
// diffusers folder, a converted single-file checkpoint, a LoRA-merged set or
// a bundle look like to the model code.
type Source interface {
	// Tensor returns the stored dtype, shape and little-endian bytes.
	Tensor(name string) (safetensors.DType, []int, []byte, error)
	// Has reports whether a weight exists.
	Has(name string) bool
}

// FileSource serves the tensors of one safetensors file, optionally under a
// key prefix (single-file checkpoints hold several models).
type FileSource struct {
	File   *safetensors.File
	Prefix string
}

// Tensor implements Source.
func (s FileSource) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	raw, info, err := s.File.Raw(s.Prefix + name)
	if err != nil {
		return "", nil, nil, err
	}
	return info.DType, info.Shape, raw, nil
}

// Has implements Source.
func (s FileSource) Has(name string) bool {
	_, ok := s.File.Info(s.Prefix + name)
	return ok
}

// Release drops the mapped pages of a weight already copied elsewhere.
func (s FileSource) Release(name string) { s.File.Release(s.Prefix + name) }

// Names lists the weights under the prefix, without it.
func (s FileSource) Names() []string {
	var out []string
	for _, n := range s.File.Names() {
		if len(n) >= len(s.Prefix) && n[:len(s.Prefix)] == s.Prefix {
			out = append(out, n[len(s.Prefix):])
		}
	}
	return out
}

// Layout says how a stored weight is rearranged on the host, once at load,
// before it reaches the device, so no graph pays for a weight transpose on
// every call.
type Layout int

const (
	// AsStored keeps the checkpoint's layout.
	AsStored Layout = iota
	// InOut turns a PyTorch Linear weight [out, in] (or a 1×1 conv kernel
	// [out, in, 1, 1]) into [in, out] so x·W needs no transpose.
	InOut
	// HWIO turns a PyTorch conv kernel [out, in, kh, kw] into
	// [kh, kw, in, out], the order im2col columns are built in.
	HWIO
)

func (l Layout) String() string {
	switch l {
	case AsStored:
		return "as-stored"
	case InOut:
		return "in-out"
	case HWIO:
		return "hwio"
	}
	return fmt.Sprintf("layout(%d)", int(l))
}

// arrange applies the layout to a stored tensor's bytes. A rearranged
// tensor is written into *scratch (grown as needed and reused by the
// caller), so loading a model makes no per-tensor garbage.
func arrange(l Layout, elem int, shape []int, data []byte, scratch *[]byte) ([]int, []byte, error) {
	stored, perm, err := layoutAxes(l, shape)
	if err != nil || perm == nil {
		return stored, data, err
	}
	return permute(elem, stored, data, perm, scratch)
}

// Arrange reads a stored weight and rearranges it as programs bind it
// (Binding.Layout): the dtype stays the stored one.
func Arrange(src Source, name string, layout Layout) (safetensors.DType, []int, []byte, error) {
	dt, shape, data, err := src.Tensor(name)
	if err != nil {
		return "", nil, nil, err
	}
	var scratch []byte
	shape, data, err = arrange(layout, dt.Size(), shape, data, &scratch)
	if err != nil {
		return "", nil, nil, fmt.Errorf("weight %q: %w", name, err)
	}
	return dt, shape, data, nil
}

// arrangedShape is the shape arrange gives a stored shape, without data.
func arrangedShape(l Layout, shape []int) ([]int, error) {
	stored, perm, err := layoutAxes(l, shape)
	if err != nil || perm == nil {
		return stored, err
	}
	out := make([]int, len(perm))
	for i, p := range perm {
		out[i] = stored[p]
	}
	return out, nil
}

// layoutAxes is the stored shape a layout reads (1×1 kernels squeezed) and
// the permutation of its axes it makes, nil when the bytes stay as stored.
func layoutAxes(l Layout, shape []int) ([]int, []int, error) {
	switch l {
	case AsStored:
		return shape, nil, nil
	case InOut:
		switch {
		case len(shape) == 2:
		case len(shape) == 4 && shape[2] == 1 && shape[3] == 1:
			shape = shape[:2]
		default:
			return nil, nil, fmt.Errorf("layout %s needs a [out, in] or [out, in, 1, 1] weight, got %v", l, shape)
		}
		return shape, []int{1, 0}, nil
	case HWIO:
		if len(shape) != 4 {
			return nil, nil, fmt.Errorf("layout %s needs a [out, in, kh, kw] weight, got %v", l, shape)
		}
		return shape, []int{2, 3, 1, 0}, nil
	}
	return nil, nil, fmt.Errorf("unknown layout %d", int(l))
}

// permute transposes an n-d array of elem-byte elements: out axis i is input
// axis perm[i].
func permute(elem int, shape []int, data []byte, perm []int, scratch *[]byte) ([]int, []byte, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n*elem != len(data) {
		return nil, nil, fmt.Errorf("%d bytes for shape %v of %d-byte elements", len(data), shape, elem)
	}
	rank := len(shape)
	inStrides := make([]int, rank)
	s := 1
	for i := rank - 1; i >= 0; i-- {
		inStrides[i] = s
		s *= shape[i]
	}
	outShape := make([]int, rank)
	strides := make([]int, rank) // input stride for each output axis
	for i, p := range perm {
		outShape[i] = shape[p]
		strides[i] = inStrides[p]
	}
	if cap(*scratch) < len(data) {
		*scratch = make([]byte, len(data))
	}
	out := (*scratch)[:len(data)]
	idx := make([]int, rank)
	src := 0
	for o := 0; o < n; o++ {
		copy(out[o*elem:(o+1)*elem], data[src*elem:(src+1)*elem])
		for a := rank - 1; a >= 0; a-- {
			idx[a]++
			src += strides[a]
			if idx[a] < outShape[a] {
				break
			}
			src -= strides[a] * outShape[a]
			idx[a] = 0
		}
	}
	return outShape, out, nil
}
