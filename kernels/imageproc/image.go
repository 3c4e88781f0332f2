package imageproc

import (
	"fmt"
	"image"
)

// RGB is an 8-bit, three-channel image with packed pixels: the bytes of the
// pixel at (x, y) are Pix[3*(y*Width+x)+0..2] in R, G, B order. It is what
// PIL's Image.convert("RGB") holds and what np.array(img) exposes (HWC).
type RGB struct {
	Width, Height int
	Pix           []uint8
}

// Gray is an 8-bit, single-channel image with packed pixels: the pixel at
// (x, y) is Pix[y*Width+x]. Canny reads and writes it.
type Gray struct {
	Width, Height int
	Pix           []uint8
}

// NewRGB returns a black image of the given size.
func NewRGB(width, height int) (*RGB, error) {
	n, err := pixelCount(width, height)
	if err != nil {
		return nil, err
	}
	return &RGB{Width: width, Height: height, Pix: make([]uint8, 3*n)}, nil
}

// NewGray returns a black image of the given size.
func NewGray(width, height int) (*Gray, error) {
	n, err := pixelCount(width, height)
	if err != nil {
		return nil, err
	}
	return &Gray{Width: width, Height: height, Pix: make([]uint8, n)}, nil
}

// pixelCount validates a size and returns width*height. Sizes whose byte
// count would overflow int are refused rather than wrapped.
func pixelCount(width, height int) (int, error) {
	if width <= 0 || height <= 0 {
		return 0, fmt.Errorf("imageproc: size %dx%d: %w", width, height, ErrEmptyImage)
	}
	if width > maxInt/4/height {
		return 0, fmt.Errorf("imageproc: size %dx%d: %w", width, height, ErrTooLarge)
	}
	return width * height, nil
}

const maxInt = int(^uint(0) >> 1)

// valid reports whether the image's fields are consistent, so that exported
// functions can refuse a hand-built image instead of indexing out of range.
func (m *RGB) valid() error {
	if m == nil {
		return fmt.Errorf("imageproc: nil RGB image")
	}
	n, err := pixelCount(m.Width, m.Height)
	if err != nil {
		return err
	}
	if len(m.Pix) != 3*n {
		return fmt.Errorf("imageproc: RGB image %dx%d has %d bytes, want %d", m.Width, m.Height, len(m.Pix), 3*n)
	}
	return nil
}

func (g *Gray) valid() error {
	if g == nil {
		return fmt.Errorf("imageproc: nil Gray image")
	}
	n, err := pixelCount(g.Width, g.Height)
	if err != nil {
		return err
	}
	if len(g.Pix) != n {
		return fmt.Errorf("imageproc: Gray image %dx%d has %d bytes, want %d", g.Width, g.Height, len(g.Pix), n)
	}
	return nil
}

// ToRGB replicates the grey channel into R, G and B, as the diffusers
// ControlNet examples do with np.concatenate([edges]*3, axis=2) to turn a
// Canny edge map into a control image.
func (g *Gray) ToRGB() (*RGB, error) {
	if err := g.valid(); err != nil {
		return nil, err
	}
	out := &RGB{Width: g.Width, Height: g.Height, Pix: make([]uint8, 3*len(g.Pix))}
	for i, v := range g.Pix {
		out.Pix[3*i+0] = v
		out.Pix[3*i+1] = v
		out.Pix[3*i+2] = v
	}
	return out, nil
}

// Image returns a standard-library view of g for encoding (image/png). It
// shares g's pixels.
func (g *Gray) Image() *image.Gray {
	return &image.Gray{Pix: g.Pix, Stride: g.Width, Rect: image.Rect(0, 0, g.Width, g.Height)}
}

// Image returns an opaque standard-library copy of m for encoding.
func (m *RGB) Image() *image.NRGBA {
	out := image.NewNRGBA(image.Rect(0, 0, m.Width, m.Height))
	for i := 0; i < m.Width*m.Height && 3*i+2 < len(m.Pix); i++ {
		out.Pix[4*i+0] = m.Pix[3*i+0]
		out.Pix[4*i+1] = m.Pix[3*i+1]
		out.Pix[4*i+2] = m.Pix[3*i+2]
		out.Pix[4*i+3] = 0xff
	}
	return out
}
