package cliflag

import (
	"slices"
	"testing"
)

func parseOne(s string) (int, int, error) {
	sizes, err := ParseSizes(s)
	if err != nil {
		return 0, 0, err
	}
	return sizes[0].Width, sizes[0].Height, nil
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		w, h int
		ok   bool
	}{
		{"512x512", 512, 512, true},
		{" 64x128 ", 64, 128, true},
		{"60x64", 0, 0, false},
		{"64", 0, 0, false},
		{"0x64", 0, 0, false},
		{"-8x8", 0, 0, false},
		{"axb", 0, 0, false},
	}
	for _, tt := range tests {
		w, h, err := parseOne(tt.in)
		if (err == nil) != tt.ok || w != tt.w || h != tt.h {
			t.Errorf("ParseSize(%q) = %d, %d, %v", tt.in, w, h, err)
		}
	}
}

func TestParseLoRA(t *testing.T) {
	tests := []struct {
		in    string
		path  string
		scale float64
		ok    bool
	}{
		{"style.safetensors", "style.safetensors", 1, true},
		{"style.safetensors:0.8", "style.safetensors", 0.8, true},
		{`C:\loras\style.safetensors`, `C:\loras\style.safetensors`, 1, true},
		{"a:b.safetensors:-0.5", "a:b.safetensors", -0.5, true},
		{":0.5", ":0.5", 1, true}, // a colon first is part of the name
		{"", "", 0, false},
		{"x.safetensors:NaN", "", 0, false},
		{"x.safetensors:Inf", "", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseLoRA(tt.in)
		if (err == nil) != tt.ok || (tt.ok && (got.Path != tt.path || got.Scale != tt.scale)) {
			t.Errorf("ParseLoRA(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestParseSizesList(t *testing.T) {
	got, err := ParseSizes("512x512, 768x512")
	if err != nil || !slices.Equal(got, []Size{{512, 512}, {768, 512}}) {
		t.Errorf("ParseSizes = %v, %v", got, err)
	}
	if _, err := ParseSizes("512x512,"); err == nil {
		t.Error("trailing comma accepted")
	}
}

func TestList(t *testing.T) {
	var l List
	l.Set("a, b")
	l.Set("c")
	if !slices.Equal(l, List{"a", "b", "c"}) || l.String() != "a,b,c" {
		t.Errorf("List = %v", l)
	}
}
