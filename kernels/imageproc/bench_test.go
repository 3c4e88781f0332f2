package imageproc

import (
	"image"
	"testing"
)

// A 1024×1024 photo-sized input with structure for Canny to find.
func benchPNG(b *testing.B) []byte { return benchPNGSize(b, 1024) }

func benchPNGSize(b *testing.B, n int) []byte {
	m := image.NewRGBA(image.Rect(0, 0, n, n))
	for i := 0; i < len(m.Pix); i += 4 {
		x, y := (i/4)%n, (i/4)/n
		m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = uint8(x^y), uint8(x*y>>6), uint8(x+y), 255
	}
	return encodePNG(b, m)
}

func BenchmarkPrepareCanny1024To512(b *testing.B) {
	data := benchPNG(b)
	opt := Options{Width: 512, Height: 512, Canny: true, CannyLow: 100, CannyHigh: 200}
	for b.Loop() {
		if _, err := Prepare(data, opt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanny512(b *testing.B)  { benchCanny(b, 512) }
func BenchmarkCanny1024(b *testing.B) { benchCanny(b, 1024) }
func BenchmarkCanny2048(b *testing.B) { benchCanny(b, 2048) }

func benchCanny(b *testing.B, n int) {
	m, err := Decode(benchPNGSize(b, n), 0)
	if err != nil {
		b.Fatal(err)
	}
	g, err := ToGray(m)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Canny(g, 100, 200); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLanczos1024To512(b *testing.B) {
	m, err := Decode(benchPNG(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Resize(m, 512, 512, Lanczos); err != nil {
			b.Fatal(err)
		}
	}
}
