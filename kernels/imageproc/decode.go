package imageproc

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
)

// DefaultMaxPixels is the pixel limit Decode applies when the caller passes
// none: 4096×4096. Decoding allocates per pixel (up to 8 bytes for 16-bit
// PNG), so the limit bounds the memory one request can claim.
const DefaultMaxPixels = 4096 * 4096

// Errors that callers can match with errors.Is to turn a bad request image
// into a client error.
var (
	// ErrFormat means the bytes are neither PNG nor JPEG.
	ErrFormat = errors.New("unsupported image format (want PNG or JPEG)")
	// ErrTooLarge means the declared size exceeds the pixel limit.
	ErrTooLarge = errors.New("image too large")
	// ErrEmptyImage means a width or height of zero (or less).
	ErrEmptyImage = errors.New("image has no pixels")
)

// Format names an accepted container format.
type Format string

// The formats Decode accepts.
const (
	PNG  Format = "png"
	JPEG Format = "jpeg"
)

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8}
)

// sniff identifies the format from the leading bytes. It does not use the
// image package's format registry, so that whatever other decoders the
// binary links in (GIF, WebP, ...) never become reachable from a request.
func sniff(data []byte) (Format, error) {
	switch {
	case bytes.HasPrefix(data, pngMagic):
		return PNG, nil
	case bytes.HasPrefix(data, jpegMagic):
		return JPEG, nil
	}
	return "", fmt.Errorf("imageproc: %w", ErrFormat)
}

// Config is what the header of an image declares.
type Config struct {
	Format        Format
	Width, Height int
}

// DecodeConfig reads only the header of a PNG or JPEG and checks the
// declared size against maxPixels (DefaultMaxPixels when maxPixels <= 0).
// It is the guard against decompression bombs: a few hundred bytes can
// declare a gigapixel image.
func DecodeConfig(data []byte, maxPixels int) (Config, error) {
	cfg, _, err := decodeConfig(data, maxPixels)
	return cfg, err
}

func decodeConfig(data []byte, maxPixels int) (Config, image.Config, error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	format, err := sniff(data)
	if err != nil {
		return Config{}, image.Config{}, err
	}
	var ic image.Config
	switch format {
	case PNG:
		ic, err = png.DecodeConfig(bytes.NewReader(data))
	case JPEG:
		ic, err = jpeg.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return Config{}, image.Config{}, fmt.Errorf("imageproc: read %s header: %w", format, err)
	}
	cfg := Config{Format: format, Width: ic.Width, Height: ic.Height}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Config{}, image.Config{}, fmt.Errorf("imageproc: %s declares %dx%d: %w", format, cfg.Width, cfg.Height, ErrEmptyImage)
	}
	// Divide rather than multiply so a hostile header cannot overflow.
	if cfg.Width > maxPixels || cfg.Height > maxPixels/cfg.Width {
		return Config{}, image.Config{}, fmt.Errorf("imageproc: %s declares %dx%d, over the limit of %d pixels: %w",
			format, cfg.Width, cfg.Height, maxPixels, ErrTooLarge)
	}
	return cfg, ic, nil
}

// Decode decodes a PNG or JPEG into RGB the way PIL's
// Image.open(...).convert("RGB") does, after checking the header against
// maxPixels (DefaultMaxPixels when maxPixels <= 0).
//
// PNG decoding is exact. PIL's conversion rules are kept: alpha is dropped
// without compositing, grey is replicated, palettes are expanded, 16-bit
// colour and grey+alpha samples keep their high byte, and 16-bit grey is
// clipped to 255 (PIL opens it as a 32-bit integer image, whose RGB
// conversion saturates instead of shifting). JPEG goes through Go's decoder,
// whose IDCT and chroma upsampling differ from libjpeg's: expect pixels to
// differ from PIL's by a few levels.
func Decode(data []byte, maxPixels int) (*RGB, error) {
	cfg, ic, err := decodeConfig(data, maxPixels)
	if err != nil {
		return nil, err
	}
	var m image.Image
	switch cfg.Format {
	case PNG:
		m, err = png.Decode(bytes.NewReader(data))
	case JPEG:
		m, err = jpeg.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("imageproc: decode %s: %w", cfg.Format, err)
	}
	if b := m.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return nil, fmt.Errorf("imageproc: decoded %s is %dx%d, header said %dx%d",
			cfg.Format, b.Dx(), b.Dy(), cfg.Width, cfg.Height)
	}
	// Go's PNG decoder turns 16-bit grey with a tRNS chunk into NRGBA64;
	// the header's colour model still tells us PIL would see a grey image.
	gray16 := ic.ColorModel == color.Gray16Model
	return fromImage(m, gray16)
}

// FromImage converts a decoded image to RGB with PIL's convert("RGB") rules
// (see Decode). An *image.Gray16 is treated as PIL treats a 16-bit grey PNG.
func FromImage(m image.Image) (*RGB, error) {
	if m == nil {
		return nil, fmt.Errorf("imageproc: nil image")
	}
	_, isGray16 := m.(*image.Gray16)
	return fromImage(m, isGray16)
}

func fromImage(m image.Image, gray16 bool) (*RGB, error) {
	b := m.Bounds()
	out, err := NewRGB(b.Dx(), b.Dy())
	if err != nil {
		return nil, err
	}
	w := out.Width
	p := out.Pix
	switch m := m.(type) {
	case *image.RGBA:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				s := m.Pix[i : i+4 : i+4]
				o := 3 * (y*w + x)
				if s[3] == 0xff {
					p[o], p[o+1], p[o+2] = s[0], s[1], s[2]
					continue
				}
				c := color.NRGBAModel.Convert(color.RGBA{s[0], s[1], s[2], s[3]}).(color.NRGBA)
				p[o], p[o+1], p[o+2] = c.R, c.G, c.B
			}
		}
	case *image.NRGBA:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = m.Pix[i], m.Pix[i+1], m.Pix[i+2]
			}
		}
	case *image.Gray:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				v := m.Pix[m.PixOffset(b.Min.X+x, b.Min.Y+y)]
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = v, v, v
			}
		}
	case *image.Gray16:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				v := clip16(uint16(m.Pix[i])<<8 | uint16(m.Pix[i+1]))
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = v, v, v
			}
		}
	case *image.NRGBA64:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				o := 3 * (y*w + x)
				if gray16 {
					v := clip16(uint16(m.Pix[i])<<8 | uint16(m.Pix[i+1]))
					p[o], p[o+1], p[o+2] = v, v, v
					continue
				}
				// Big-endian samples: the first byte is the high byte.
				p[o], p[o+1], p[o+2] = m.Pix[i], m.Pix[i+2], m.Pix[i+4]
			}
		}
	case *image.RGBA64:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				o := 3 * (y*w + x)
				if m.Pix[i+6] == 0xff && m.Pix[i+7] == 0xff {
					p[o], p[o+1], p[o+2] = m.Pix[i], m.Pix[i+2], m.Pix[i+4]
					continue
				}
				c := color.NRGBA64Model.Convert(m.RGBA64At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				p[o], p[o+1], p[o+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
			}
		}
	case *image.Paletted:
		var lut [256][3]uint8
		for i, c := range m.Palette {
			if i >= len(lut) {
				break
			}
			if c == nil {
				continue
			}
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[i] = [3]uint8{n.R, n.G, n.B}
		}
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				c := lut[m.Pix[m.PixOffset(b.Min.X+x, b.Min.Y+y)]]
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = c[0], c[1], c[2]
			}
		}
	case *image.YCbCr:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				yi := m.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := m.COffset(b.Min.X+x, b.Min.Y+y)
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
	case *image.CMYK:
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				i := m.PixOffset(b.Min.X+x, b.Min.Y+y)
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = color.CMYKToRGB(m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3])
			}
		}
	default:
		// Anything else: the high byte of the non-premultiplied samples.
		for y := 0; y < out.Height; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBA64Model.Convert(m.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				o := 3 * (y*w + x)
				p[o], p[o+1], p[o+2] = uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8)
			}
		}
	}
	return out, nil
}

// clip16 saturates a 16-bit grey sample to 8 bits, as PIL's I;16 -> RGB
// conversion does.
func clip16(v uint16) uint8 {
	if v > 0xff {
		return 0xff
	}
	return uint8(v)
}
