package imageproc

import (
	"errors"
	"slices"
	"testing"
)

// rowImage builds a 1-pixel-high grey-valued RGB image.
func rowImage(vals ...uint8) *RGB {
	m := &RGB{Width: len(vals), Height: 1, Pix: make([]uint8, 3*len(vals))}
	for i, v := range vals {
		m.Pix[3*i], m.Pix[3*i+1], m.Pix[3*i+2] = v, v, v
	}
	return m
}

// colImage builds a 1-pixel-wide image.
func colImage(vals ...uint8) *RGB {
	m := rowImage(vals...)
	m.Width, m.Height = 1, len(vals)
	return m
}

// channel0 returns the R channel in raster order.
func channel0(m *RGB) []uint8 {
	out := make([]uint8, m.Width*m.Height)
	for i := range out {
		out[i] = m.Pix[3*i]
	}
	return out
}

// The expected values below come from Pillow's Resample.c formulas worked
// through in double precision (a short Python transcription used as a
// calculator): w(x) = sinc(x)·sinc(x/3), taps at (i - center + 0.5)/scale
// for downscaling, normalised, then rounded to Q22.
func TestLanczosKernel(t *testing.T) {
	tests := []struct {
		in, out int
		first   []int
		weights [][]int32
	}{
		// 4 -> 2: scale 2, taps at ±0.25, ±0.75, ±1.25 (stretched by 2).
		{4, 2, []int{0, 0}, [][]int32{
			{1946964, 1946964, 591023, -290647},
			{-290647, 591023, 1946964, 1946964},
		}},
		// 5 -> 3: scale 5/3, centre pixel tap at 0, the third tap at
		// exactly one filter period gives a zero weight.
		{5, 3, []int{0, 0, 0}, [][]int32{
			{2467317, 1952482, 0, -298379, 72884},
			{-289771, 1159085, 2455677, 1159085, -289771},
			{72884, -298379, 0, 1952482, 2467317},
		}},
		// 2 -> 3 upscale: the middle output sits exactly between inputs.
		{2, 3, []int{0, 0, 0}, [][]int32{
			{4715023, -520719},
			{2097152, 2097152},
			{-520719, 4715023},
		}},
	}
	for _, tt := range tests {
		k := precomputeKernel(tt.in, tt.out)
		for i := range tt.out {
			got := k.weights[i*k.ksize : i*k.ksize+k.count[i]]
			if k.first[i] != tt.first[i] || !slices.Equal(got, tt.weights[i]) {
				t.Errorf("%d->%d output %d: first %d weights %v, want first %d weights %v",
					tt.in, tt.out, i, k.first[i], got, tt.first[i], tt.weights[i])
			}
			var sum int32
			for _, w := range got {
				sum += w
			}
			if d := sum - 1<<precisionBits; d < -2 || d > 2 {
				t.Errorf("%d->%d output %d: weights sum to %d, want ~%d", tt.in, tt.out, i, sum, 1<<precisionBits)
			}
		}
	}
}

func TestLanczos1D(t *testing.T) {
	tests := []struct {
		name string
		in   []uint8
		want []uint8
	}{
		{"step down 8->4", []uint8{0, 0, 0, 0, 255, 255, 255, 255}, []uint8{0, 13, 242, 255}},
		// Ringing: the negative lobes overshoot and are clipped at 0 and
		// 255 on the flats and undershoot near the edge.
		{"step up 4->8", []uint8{0, 0, 255, 255}, []uint8{10, 0, 0, 54, 201, 255, 255, 245}},
		{"alternating 8->4", []uint8{0, 255, 0, 255, 0, 255, 0, 255}, []uint8{106, 134, 121, 149}},
		{"alternating 16->8", []uint8{0, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255},
			[]uint8{106, 133, 127, 127, 127, 128, 122, 149}},
		{"ramp 6->4", []uint8{0, 50, 100, 150, 200, 250}, []uint8{13, 86, 164, 237}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Horizontally: only the horizontal pass runs.
			got, err := Resize(rowImage(tt.in...), len(tt.want), 1, Lanczos)
			if err != nil {
				t.Fatal(err)
			}
			if g := channel0(got); !slices.Equal(g, tt.want) {
				t.Errorf("horizontal: got %v, want %v", g, tt.want)
			}
			// Vertically: only the vertical pass runs; same kernel.
			got, err = Resize(colImage(tt.in...), 1, len(tt.want), Lanczos)
			if err != nil {
				t.Fatal(err)
			}
			if g := channel0(got); !slices.Equal(g, tt.want) {
				t.Errorf("vertical: got %v, want %v", g, tt.want)
			}
		})
	}
}

// An 8×8 checkerboard of 2×2 squares: both passes, with the intermediate
// rounded to 8 bits between them as Pillow does.
func TestLanczos2D(t *testing.T) {
	src := &RGB{Width: 8, Height: 8, Pix: make([]uint8, 3*64)}
	for y := range 8 {
		for x := range 8 {
			if (x/2+y/2)%2 == 1 {
				i := 3 * (y*8 + x)
				src.Pix[i], src.Pix[i+1], src.Pix[i+2] = 255, 255, 255
			}
		}
	}
	tests := []struct {
		w, h int
		want []uint8
	}{
		{4, 4, []uint8{
			36, 206, 49, 219,
			206, 60, 195, 49,
			49, 195, 60, 206,
			219, 49, 206, 36,
		}},
		{3, 5, []uint8{
			86, 127, 169,
			152, 127, 103,
			128, 127, 128,
			103, 127, 152,
			169, 127, 86,
		}},
	}
	for _, tt := range tests {
		got, err := Resize(src, tt.w, tt.h, Lanczos)
		if err != nil {
			t.Fatal(err)
		}
		if g := channel0(got); !slices.Equal(g, tt.want) {
			t.Errorf("8x8 -> %dx%d: got %v, want %v", tt.w, tt.h, g, tt.want)
		}
	}
}

// The weights of every output sample sum to one, so a flat image stays
// flat whatever the scale; the channels stay independent.
func TestLanczosConstant(t *testing.T) {
	sizes := [][2]int{{1, 1}, {7, 3}, {64, 64}, {100, 37}, {13, 200}, {640, 8}}
	src := &RGB{Width: 31, Height: 17, Pix: make([]uint8, 3*31*17)}
	for i := 0; i < len(src.Pix); i += 3 {
		src.Pix[i], src.Pix[i+1], src.Pix[i+2] = 0, 128, 255
	}
	for _, s := range sizes {
		got, err := Resize(src, s[0], s[1], Lanczos)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(got.Pix); i += 3 {
			if got.Pix[i] != 0 || got.Pix[i+1] != 128 || got.Pix[i+2] != 255 {
				t.Fatalf("31x17 -> %dx%d: pixel %d = %v, want [0 128 255]", s[0], s[1], i/3, got.Pix[i:i+3])
			}
		}
	}
}

func TestNearest(t *testing.T) {
	tests := []struct {
		in, out int
		want    []uint8
	}{
		{4, 2, []uint8{1, 3}},
		{3, 2, []uint8{0, 2}},
		{5, 3, []uint8{0, 2, 4}},
		{2, 5, []uint8{0, 0, 1, 1, 1}},
		// (3+0.5)·2/7 is exactly 1, but Pillow reaches it by adding 2/7
		// three times to 1/7 and lands just below: source pixel 0.
		{2, 7, []uint8{0, 0, 0, 0, 1, 1, 1}},
	}
	for _, tt := range tests {
		in := make([]uint8, tt.in)
		for i := range in {
			in[i] = uint8(i)
		}
		got, err := Resize(rowImage(in...), tt.out, 1, Nearest)
		if err != nil {
			t.Fatal(err)
		}
		if g := channel0(got); !slices.Equal(g, tt.want) {
			t.Errorf("row %d->%d: got %v, want %v", tt.in, tt.out, g, tt.want)
		}
		got, err = Resize(colImage(in...), 1, tt.out, Nearest)
		if err != nil {
			t.Fatal(err)
		}
		if g := channel0(got); !slices.Equal(g, tt.want) {
			t.Errorf("column %d->%d: got %v, want %v", tt.in, tt.out, g, tt.want)
		}
	}
}

func TestResizeSameSizeCopies(t *testing.T) {
	src := rowImage(1, 2, 3)
	for _, f := range []Filter{Lanczos, Nearest} {
		got, err := Resize(src, 3, 1, f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Pix, src.Pix) {
			t.Errorf("%v: same-size resize changed pixels", f)
		}
		got.Pix[0] = 99
		if src.Pix[0] == 99 {
			t.Errorf("%v: same-size resize aliases its input", f)
		}
	}
}

func TestResizeErrors(t *testing.T) {
	good := rowImage(1, 2, 3)
	tests := []struct {
		name string
		img  *RGB
		w, h int
		f    Filter
		is   error
	}{
		{"nil image", nil, 2, 2, Lanczos, nil},
		{"short pixels", &RGB{Width: 2, Height: 2, Pix: make([]uint8, 5)}, 1, 1, Lanczos, nil},
		{"zero width", good, 0, 1, Lanczos, ErrEmptyImage},
		{"negative height", good, 1, -1, Nearest, ErrEmptyImage},
		{"huge", good, 1 << 40, 1 << 40, Lanczos, ErrTooLarge},
		{"bad filter", good, 2, 1, Filter(9), nil},
	}
	for _, tt := range tests {
		_, err := Resize(tt.img, tt.w, tt.h, tt.f)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.is)
		}
	}
}
