package pipeline

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"
	"math"
)

// toUint8 converts [0, 1] floats to bytes as diffusers' numpy_to_pil does:
// (x * 255).round() in float32, numpy rounding halves to even.
func toUint8(x []float32) []uint8 {
	out := make([]uint8, len(x))
	for i, v := range x {
		f := float64(v * 255)
		switch {
		case f <= 0 || math.IsNaN(f):
			out[i] = 0
		case f >= 255:
			out[i] = 255
		default:
			out[i] = uint8(math.RoundToEven(f))
		}
	}
	return out
}

// splitImages views packed [n, h, w, 3] pixels as n opaque RGBA images.
func splitImages(pix []uint8, n, width, height int) []*image.RGBA {
	out := make([]*image.RGBA, n)
	plane := width * height * 3
	for k := range out {
		img := image.NewRGBA(image.Rect(0, 0, width, height))
		src := pix[k*plane : (k+1)*plane]
		for i := 0; i < width*height; i++ {
			copy(img.Pix[4*i:4*i+3], src[3*i:3*i+3])
			img.Pix[4*i+3] = 255
		}
		out[k] = img
	}
	return out
}

// grid tiles images (all one size) row-major on a black canvas, as
// diffusers' make_image_grid does, with the columns ⌈√n⌉ so the preview
// stays near square.
func grid(imgs []*image.RGBA) *image.RGBA {
	n := len(imgs)
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	rows := (n + cols - 1) / cols
	b := imgs[0].Bounds()
	w, h := b.Dx(), b.Dy()
	out := image.NewRGBA(image.Rect(0, 0, cols*w, rows*h))
	draw.Draw(out, out.Bounds(), image.NewUniform(image.Black), image.Point{}, draw.Src)
	for i, img := range imgs {
		at := image.Pt((i%cols)*w, (i/cols)*h)
		draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(image.Pt(w, h))}, img, b.Min, draw.Src)
	}
	return out
}

// encodeImage encodes an opaque image. PNG uses the fastest compression:
// encoding is on every invocation's critical path and generated images
// compress little better at higher levels.
func encodeImage(img *image.RGBA, f Format, quality int) ([]byte, error) {
	var buf bytes.Buffer
	switch f {
	case PNG:
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, img); err != nil {
			return nil, err
		}
	case JPEG:
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown format %q", f)
	}
	return buf.Bytes(), nil
}
