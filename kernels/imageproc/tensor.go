package imageproc

import (
	"fmt"
	"slices"
)

// maxTensorLen bounds the values a repeat may produce (8 GiB of float32),
// far above any real batch of control images, so that a bad count fails
// with an error instead of an allocation panic.
const maxTensorLen = 1 << 31

// Tensor is a dense float32 array in row-major (C) order, the form in which
// the control image is handed to the ControlNet.
type Tensor struct {
	Shape []int
	Data  []float32
}

// ToTensor converts m to float32 NCHW with shape [1, 3, H, W] and values
// x/255 in [0, 1], as diffusers' VaeImageProcessor does for ControlNet
// (do_normalize=False, so no mapping to [-1, 1]). The division is done in
// float32, as numpy does for a float32 array divided by 255.0.
func ToTensor(m *RGB) (Tensor, error) {
	if err := m.valid(); err != nil {
		return Tensor{}, err
	}
	plane := m.Width * m.Height
	data := make([]float32, 3*plane)
	r, g, b := data[:plane], data[plane:2*plane], data[2*plane:]
	for i := 0; i < plane; i++ {
		p := m.Pix[3*i : 3*i+3 : 3*i+3]
		r[i] = float32(p[0]) / 255
		g[i] = float32(p[1]) / 255
		b[i] = float32(p[2]) / 255
	}
	return Tensor{Shape: []int{1, 3, m.Height, m.Width}, Data: data}, nil
}

// check validates that t has a leading batch dimension and that Data
// matches Shape.
func (t Tensor) check() (batch, item int, err error) {
	if len(t.Shape) == 0 {
		return 0, 0, fmt.Errorf("imageproc: tensor has no batch dimension")
	}
	n := 1
	for _, d := range t.Shape {
		if d < 0 || (d > 0 && n > maxInt/d) {
			return 0, 0, fmt.Errorf("imageproc: bad tensor shape %v", t.Shape)
		}
		n *= d
	}
	if n != len(t.Data) {
		return 0, 0, fmt.Errorf("imageproc: tensor shape %v needs %d values, has %d", t.Shape, n, len(t.Data))
	}
	if t.Shape[0] == 0 {
		return 0, 0, nil
	}
	return t.Shape[0], n / t.Shape[0], nil
}

func (t Tensor) repeat(n int, interleave bool) (Tensor, error) {
	batch, item, err := t.check()
	if err != nil {
		return Tensor{}, err
	}
	if n < 1 {
		return Tensor{}, fmt.Errorf("imageproc: repeat count %d, want >= 1", n)
	}
	if len(t.Data) > 0 && n > maxTensorLen/len(t.Data) {
		return Tensor{}, fmt.Errorf("imageproc: repeating %d values %d times exceeds %d values", len(t.Data), n, maxTensorLen)
	}
	shape := slices.Clone(t.Shape)
	shape[0] *= n
	data := make([]float32, 0, n*len(t.Data))
	if interleave {
		for b := 0; b < batch; b++ {
			for range n {
				data = append(data, t.Data[b*item:(b+1)*item]...)
			}
		}
	} else {
		for range n {
			data = append(data, t.Data...)
		}
	}
	return Tensor{Shape: shape, Data: data}, nil
}

// RepeatInterleave repeats each batch item n times in place:
// torch.repeat_interleave(t, n, dim=0), which the ControlNet pipelines use
// to match the control image batch to batch_size × num_images_per_prompt.
func RepeatInterleave(t Tensor, n int) (Tensor, error) {
	return t.repeat(n, true)
}

// Tile concatenates n copies of the whole batch: torch.cat([t]*n, dim=0).
// With n = 2 it is the classifier-free guidance doubling, matching the
// latent batch order [unconditional..., conditional...].
func Tile(t Tensor, n int) (Tensor, error) {
	return t.repeat(n, false)
}
