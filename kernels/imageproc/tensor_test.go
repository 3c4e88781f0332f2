package imageproc

import (
	"slices"
	"testing"
)

func TestToTensor(t *testing.T) {
	m := &RGB{Width: 2, Height: 1, Pix: []uint8{255, 0, 51, 0, 255, 102}}
	got, err := ToTensor(m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, []int{1, 3, 1, 2}) {
		t.Fatalf("shape %v", got.Shape)
	}
	// Planar: all R, then all G, then all B; x/255 in float32.
	want := []float32{1, 0, 0, 1, float32(51) / float32(255), float32(102) / float32(255)}
	if !slices.Equal(got.Data, want) {
		t.Errorf("data %v, want %v", got.Data, want)
	}
	if _, err := ToTensor(&RGB{Width: 2, Height: 2}); err == nil {
		t.Error("ToTensor accepted an image without pixels")
	}
}

func TestRepeat(t *testing.T) {
	// Two batch items of two values each: [a0 a1] [b0 b1].
	in := Tensor{Shape: []int{2, 1, 1, 2}, Data: []float32{1, 2, 3, 4}}
	tests := []struct {
		name string
		fn   func(Tensor, int) (Tensor, error)
		n    int
		want []float32
	}{
		{"interleave 2", RepeatInterleave, 2, []float32{1, 2, 1, 2, 3, 4, 3, 4}},
		{"tile 2 (CFG)", Tile, 2, []float32{1, 2, 3, 4, 1, 2, 3, 4}},
		{"interleave 1", RepeatInterleave, 1, []float32{1, 2, 3, 4}},
		{"tile 3", Tile, 3, []float32{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}},
	}
	for _, tt := range tests {
		got, err := tt.fn(in, tt.n)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(got.Data, tt.want) || !slices.Equal(got.Shape, []int{2 * tt.n, 1, 1, 2}) {
			t.Errorf("%s: shape %v data %v, want data %v", tt.name, got.Shape, got.Data, tt.want)
		}
	}
	if !slices.Equal(in.Shape, []int{2, 1, 1, 2}) {
		t.Errorf("input shape modified: %v", in.Shape)
	}
}

func TestRepeatErrors(t *testing.T) {
	tests := []struct {
		name string
		t    Tensor
		n    int
	}{
		{"no shape", Tensor{Data: []float32{1}}, 2},
		{"data mismatch", Tensor{Shape: []int{1, 3}, Data: []float32{1}}, 2},
		{"negative dim", Tensor{Shape: []int{1, -3}}, 2},
		{"zero count", Tensor{Shape: []int{1}, Data: []float32{1}}, 0},
		{"huge count", Tensor{Shape: []int{1}, Data: []float32{1}}, maxInt},
	}
	for _, tt := range tests {
		if _, err := Tile(tt.t, tt.n); err == nil {
			t.Errorf("Tile %s: no error", tt.name)
		}
		if _, err := RepeatInterleave(tt.t, tt.n); err == nil {
			t.Errorf("RepeatInterleave %s: no error", tt.name)
		}
	}
}

func TestDefaultSize(t *testing.T) {
	tests := []struct {
		iw, ih, w, h, f int
		ww, wh          int
	}{
		{150, 103, 0, 0, 8, 144, 96},
		{150, 103, 64, 0, 8, 64, 96},
		{150, 103, 70, 70, 8, 64, 64},
		{150, 103, 0, 0, 0, 150, 103},
	}
	for _, tt := range tests {
		w, h := DefaultSize(tt.iw, tt.ih, tt.w, tt.h, tt.f)
		if w != tt.ww || h != tt.wh {
			t.Errorf("DefaultSize(%d,%d,%d,%d,%d) = %d,%d, want %d,%d", tt.iw, tt.ih, tt.w, tt.h, tt.f, w, h, tt.ww, tt.wh)
		}
	}
}
