package imageproc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"slices"
	"testing"
)

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngChunk encodes one PNG chunk with its CRC.
func pngChunk(typ string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(len(data)))
	b.WriteString(typ)
	b.Write(data)
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	binary.Write(&b, binary.BigEndian, crc.Sum32())
	return b.Bytes()
}

// pngHeaderOnly is a PNG that is nothing but a valid signature and IHDR
// declaring the given size (8-bit RGB): what a decompression bomb's first
// 33 bytes look like.
func pngHeaderOnly(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // bit depth 8, truecolour
	return append(slices.Clone(pngMagic), pngChunk("IHDR", ihdr)...)
}

// withChunkAfterIHDR inserts a chunk right after IHDR (8-byte signature +
// 25-byte IHDR chunk).
func withChunkAfterIHDR(p []byte, typ string, data []byte) []byte {
	const afterIHDR = 8 + 25
	out := slices.Clone(p[:afterIHDR])
	out = append(out, pngChunk(typ, data)...)
	return append(out, p[afterIHDR:]...)
}

func TestDecodePNG(t *testing.T) {
	rect := image.Rect(0, 0, 2, 1)

	rgba := image.NewNRGBA(rect)
	rgba.SetNRGBA(0, 0, color.NRGBA{10, 20, 30, 0}) // fully transparent
	rgba.SetNRGBA(1, 0, color.NRGBA{200, 100, 50, 128})

	gray := image.NewGray(rect)
	gray.SetGray(0, 0, color.Gray{7})
	gray.SetGray(1, 0, color.Gray{250})

	gray16 := image.NewGray16(rect)
	gray16.SetGray16(0, 0, color.Gray16{0x00ab})
	gray16.SetGray16(1, 0, color.Gray16{0x0180})

	rgb16 := image.NewRGBA64(rect)
	rgb16.SetRGBA64(0, 0, color.RGBA64{0x12ff, 0x3400, 0xfe01, 0xffff})
	rgb16.SetRGBA64(1, 0, color.RGBA64{0x00ff, 0xffff, 0x8080, 0xffff})

	rgba16 := image.NewNRGBA64(rect)
	rgba16.SetNRGBA64(0, 0, color.NRGBA64{0x12ff, 0x3400, 0xfe01, 0})
	rgba16.SetNRGBA64(1, 0, color.NRGBA64{0x00ff, 0xffff, 0x8080, 0x1234})

	pal := image.NewPaletted(rect, color.Palette{
		color.NRGBA{1, 2, 3, 255},
		color.NRGBA{40, 50, 60, 0}, // transparent entry: tRNS chunk
	})
	pal.SetColorIndex(0, 0, 1)
	pal.SetColorIndex(1, 0, 0)

	tests := []struct {
		name string
		data []byte
		want []uint8
	}{
		{"RGBA drops alpha without compositing", encodePNG(t, rgba), []uint8{10, 20, 30, 200, 100, 50}},
		{"grey is replicated", encodePNG(t, gray), []uint8{7, 7, 7, 250, 250, 250}},
		// PIL opens 16-bit grey as a 32-bit integer image; its RGB
		// conversion saturates rather than shifting.
		{"16-bit grey saturates", encodePNG(t, gray16), []uint8{0xab, 0xab, 0xab, 255, 255, 255}},
		{"16-bit grey with tRNS saturates", withChunkAfterIHDR(encodePNG(t, gray16), "tRNS", []byte{0x00, 0xab}),
			[]uint8{0xab, 0xab, 0xab, 255, 255, 255}},
		{"16-bit RGB keeps the high byte", encodePNG(t, rgb16), []uint8{0x12, 0x34, 0xfe, 0x00, 0xff, 0x80}},
		{"16-bit RGBA keeps the high byte, drops alpha", encodePNG(t, rgba16), []uint8{0x12, 0x34, 0xfe, 0x00, 0xff, 0x80}},
		{"palette with transparency is expanded", encodePNG(t, pal), []uint8{40, 50, 60, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.data, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Width != 2 || got.Height != 1 || !slices.Equal(got.Pix, tt.want) {
				t.Errorf("got %dx%d %v, want 2x1 %v", got.Width, got.Height, got.Pix, tt.want)
			}
		})
	}
}

func TestDecodeJPEG(t *testing.T) {
	// Flat colours survive JPEG almost exactly; Go's decoder is not
	// libjpeg, so allow a couple of levels.
	src := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for i := 0; i < len(src.Pix); i += 4 {
		copy(src.Pix[i:i+4], []uint8{200, 60, 30, 255})
	}
	gray := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range gray.Pix {
		gray.Pix[i] = 77
	}
	tests := []struct {
		name string
		img  image.Image
		want [3]int
	}{
		{"colour", src, [3]int{200, 60, 30}},
		{"grey", gray, [3]int{77, 77, 77}},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := jpeg.Encode(&b, tt.img, &jpeg.Options{Quality: 100}); err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b.Bytes(), 0)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got.Width != 16 || got.Height != 16 {
			t.Fatalf("%s: size %dx%d", tt.name, got.Width, got.Height)
		}
		for i, v := range got.Pix {
			if d := int(v) - tt.want[i%3]; d < -3 || d > 3 {
				t.Fatalf("%s: byte %d = %d, want %d±3", tt.name, i, v, tt.want[i%3])
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	small := encodePNG(t, image.NewGray(image.Rect(0, 0, 10, 10)))
	tests := []struct {
		name      string
		data      []byte
		maxPixels int
		is        error // nil: any error
	}{
		{"empty", nil, 0, ErrFormat},
		{"text", []byte("hello, world"), 0, ErrFormat},
		{"gif", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), 0, ErrFormat},
		{"bomb header 100000x100000", pngHeaderOnly(100000, 100000), 0, ErrTooLarge},
		{"bomb header 4097x4096", pngHeaderOnly(4097, 4096), 0, ErrTooLarge},
		{"wide 2^31-1 x 1", pngHeaderOnly(1<<31-1, 1), 0, ErrTooLarge},
		{"over a caller limit", small, 99, ErrTooLarge},
		{"zero width", pngHeaderOnly(0, 10), 0, nil},
		{"header only, no pixels", pngHeaderOnly(4, 4), 0, nil},
		{"truncated", small[:len(small)/2], 0, nil},
		{"jpeg magic only", []byte{0xff, 0xd8, 0xff}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(tt.data, tt.maxPixels)
			if err == nil {
				t.Fatalf("decoded %dx%d, want an error", m.Width, m.Height)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q, want %q", err, tt.is)
			}
		})
	}
	// At the limit exactly it decodes.
	if _, err := Decode(small, 100); err != nil {
		t.Errorf("10x10 with limit 100: %v", err)
	}
}

func TestDecodeConfig(t *testing.T) {
	cfg, err := DecodeConfig(pngHeaderOnly(640, 480), 0)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != (Config{Format: PNG, Width: 640, Height: 480}) {
		t.Errorf("config %+v", cfg)
	}
}

func TestPrepareErrors(t *testing.T) {
	data := encodePNG(t, image.NewGray(image.Rect(0, 0, 8, 8)))
	tests := []struct {
		name string
		opt  Options
		is   error
	}{
		{"no size", Options{}, ErrEmptyImage},
		{"target over the limit", Options{Width: 5000, Height: 5000}, ErrTooLarge},
		{"target over a caller limit", Options{Width: 8, Height: 8, MaxPixels: 63}, ErrTooLarge},
	}
	for _, tt := range tests {
		if _, err := Prepare(data, tt.opt); !errors.Is(err, tt.is) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.is)
		}
	}
	got, err := Prepare(data, Options{Width: 16, Height: 8, Canny: true, CannyLow: 100, CannyHigh: 200})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, []int{1, 3, 8, 16}) {
		t.Errorf("shape %v", got.Shape)
	}
}

// FuzzDecode feeds arbitrary bytes to the request-facing entry point: it
// must return an error or a consistent image within the limit, never panic
// or allocate past the limit.
func FuzzDecode(f *testing.F) {
	f.Add(encodePNG(f, image.NewGray(image.Rect(0, 0, 3, 2))))
	f.Add(pngHeaderOnly(100000, 100000))
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewRGBA(image.Rect(0, 0, 9, 9)), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data, limit)
		if err != nil {
			return
		}
		if m.Width <= 0 || m.Height <= 0 || m.Width*m.Height > limit || len(m.Pix) != 3*m.Width*m.Height {
			t.Fatalf("inconsistent image %dx%d with %d bytes", m.Width, m.Height, len(m.Pix))
		}
	})
}

func TestFromImage(t *testing.T) {
	// A sub-image, so that the origin is not (0, 0).
	rgba := image.NewRGBA(image.Rect(0, 0, 4, 4))
	rgba.SetRGBA(2, 3, color.RGBA{100, 50, 0, 255})
	rgba.SetRGBA(3, 3, color.RGBA{64, 32, 0, 128}) // premultiplied
	sub := rgba.SubImage(image.Rect(2, 3, 4, 4))

	cmyk := image.NewCMYK(image.Rect(0, 0, 2, 1))
	cmyk.SetCMYK(0, 0, color.CMYK{0, 0, 0, 0})
	cmyk.SetCMYK(1, 0, color.CMYK{255, 0, 0, 0})

	alpha16 := image.NewAlpha16(image.Rect(0, 0, 2, 1)) // generic path
	alpha16.SetAlpha16(0, 0, color.Alpha16{0xffff})
	alpha16.SetAlpha16(1, 0, color.Alpha16{0})

	tests := []struct {
		name string
		img  image.Image
		want []uint8
	}{
		// Un-premultiplying uses color.NRGBAModel, which truncates: 64/128
		// of full scale becomes 127, not 128. PNG never yields such pixels.
		{"RGBA sub-image, premultiplied alpha undone", sub, []uint8{100, 50, 0, 127, 63, 0}},
		{"CMYK", cmyk, []uint8{255, 255, 255, 0, 255, 255}},
		{"other models via NRGBA64", alpha16, []uint8{255, 255, 255, 0, 0, 0}},
	}
	for _, tt := range tests {
		got, err := FromImage(tt.img)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got.Width != 2 || got.Height != 1 || !slices.Equal(got.Pix, tt.want) {
			t.Errorf("%s: got %dx%d %v, want 2x1 %v", tt.name, got.Width, got.Height, got.Pix, tt.want)
		}
	}
	if _, err := FromImage(nil); err == nil {
		t.Error("FromImage(nil): no error")
	}
	if _, err := FromImage(image.NewRGBA(image.Rectangle{})); !errors.Is(err, ErrEmptyImage) {
		t.Errorf("FromImage(empty): %v, want ErrEmptyImage", err)
	}
}

func TestImageViews(t *testing.T) {
	g := &Gray{Width: 2, Height: 1, Pix: []uint8{0, 255}}
	m, err := FromImage(g.Image())
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromImage(m.Image())
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{0, 0, 0, 255, 255, 255}; !slices.Equal(back.Pix, want) {
		t.Errorf("round trip %v, want %v", back.Pix, want)
	}
}
