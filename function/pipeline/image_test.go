package pipeline

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"slices"
	"testing"
)

func TestToUint8(t *testing.T) {
	tests := []struct {
		in   float32
		want uint8
	}{
		{0, 0},
		{1, 255},
		{-0.25, 0},
		{1.5, 255},
		{float32(math.NaN()), 0},
		// x·255 is exactly a half in float32 for these: numpy's round
		// goes to the even neighbour.
		{0.5, 128},
		{0.1, 26},
		{0.3, 76},
		{2.5 / 255, 2},
		{0.9999, 255},
	}
	for _, tt := range tests {
		if got := toUint8([]float32{tt.in})[0]; got != tt.want {
			t.Errorf("toUint8(%v) = %d, want %d (x·255 = %v)", tt.in, got, tt.want, tt.in*255)
		}
	}
}

func solid(c color.RGBA, w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(m.Pix); i += 4 {
		m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return m
}

func TestGrid(t *testing.T) {
	red := color.RGBA{255, 0, 0, 255}
	green := color.RGBA{0, 255, 0, 255}
	blue := color.RGBA{0, 0, 255, 255}
	black := color.RGBA{0, 0, 0, 255}
	tests := []struct {
		name   string
		colors []color.RGBA
		w, h   int
		// want is the color of each grid cell, row-major.
		want []color.RGBA
	}{
		{"one", []color.RGBA{red}, 1, 1, []color.RGBA{red}},
		{"two side by side", []color.RGBA{red, green}, 2, 1, []color.RGBA{red, green}},
		{"three with an empty cell", []color.RGBA{red, green, blue}, 2, 2, []color.RGBA{red, green, blue, black}},
		{"five", []color.RGBA{red, green, blue, red, green}, 3, 2, []color.RGBA{red, green, blue, red, green, black}},
	}
	const w, h = 4, 3
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var imgs []*image.RGBA
			for _, c := range tt.colors {
				imgs = append(imgs, solid(c, w, h))
			}
			g := grid(imgs)
			if b := g.Bounds(); b.Dx() != tt.w*w || b.Dy() != tt.h*h {
				t.Fatalf("grid %dx%d, want %dx%d", b.Dx(), b.Dy(), tt.w*w, tt.h*h)
			}
			for i, want := range tt.want {
				x0, y0 := (i%tt.w)*w, (i/tt.w)*h
				for y := y0; y < y0+h; y++ {
					for x := x0; x < x0+w; x++ {
						if got := g.RGBAAt(x, y); got != want {
							t.Fatalf("cell %d pixel (%d, %d) = %v, want %v", i, x, y, got, want)
						}
					}
				}
			}
		})
	}
}

func TestSplitAndEncode(t *testing.T) {
	const w, h = 8, 4
	pix := make([]uint8, 2*w*h*3)
	for i := range pix {
		pix[i] = uint8(i * 7)
	}
	imgs := splitImages(pix, 2, w, h)
	for k, img := range imgs {
		data, err := encodeImage(img, PNG, 0)
		if err != nil {
			t.Fatal(err)
		}
		m, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := rgbBytes(m), pix[k*w*h*3:(k+1)*w*h*3]; !slices.Equal(got, want) {
			t.Errorf("image %d: PNG round trip differs", k)
		}
		data, err = encodeImage(img, JPEG, 90)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Width != w || cfg.Height != h {
			t.Errorf("image %d: JPEG is %dx%d, want %dx%d", k, cfg.Width, cfg.Height, w, h)
		}
	}
	if _, err := encodeImage(imgs[0], "webp", 0); err == nil {
		t.Error("encoding an unknown format succeeded")
	}
}
