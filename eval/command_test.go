package eval

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
)

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
		w, h, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || w != tt.w || h != tt.h {
			t.Errorf("ParseSize(%q) = %d, %d, %v", tt.in, w, h, err)
		}
	}
}

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		in   string
		want []uint64
		ok   bool
	}{
		{"1", []uint64{1}, true},
		{"1, 2,18446744073709551615", []uint64{1, 2, math.MaxUint64}, true},
		{"", nil, false},
		{"1,-2", nil, false},
		{"1,x", nil, false},
		{"3,3", nil, false},
	}
	for _, tt := range tests {
		got, err := ParseSeeds(tt.in)
		if (err == nil) != tt.ok || len(got) != len(tt.want) {
			t.Errorf("ParseSeeds(%q) = %v, %v", tt.in, got, err)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParseSeeds(%q) = %v, want %v", tt.in, got, tt.want)
			}
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

func TestCommandRefuses(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	tests := []struct {
		name string
		args []string
	}{
		{"no out", nil},
		{"unknown flag", []string{"--out", out, "--bogus"}},
		{"extra argument", []string{"--out", out, "stray"}},
		{"bad size", []string{"--out", out, "--size", "65x64"}},
		{"bad seeds", []string{"--out", out, "--seeds", "x"}},
		{"bad lora", []string{"--out", out, "--lora", "x:NaN"}},
		{"unknown map", []string{"--out", out, "--maps", "spirals"}},
		{"no maps", []string{"--out", out, "--maps", "none"}},
		{"missing prompts", []string{"--out", out, "--prompts", filepath.Join(dir, "none.txt")}},
		{"missing controls", []string{"--out", out, "--controls", filepath.Join(dir, "none")}},
		{"bad tolerance", []string{"--out", out, "--edge-tolerance", "99"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := command(tt.args, io.Discard, io.Discard); err == nil {
				t.Error("no error")
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused command left %s behind", out)
			}
		})
	}
}

func TestRunCanceled(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the demo model")
	}
	cfg := DefaultConfig()
	cfg.Width, cfg.Height, cfg.Steps = DemoSize, DemoSize, DemoSteps
	cfg.WorkDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run on a canceled context: %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(cfg.WorkDir); len(left) != 0 {
		t.Errorf("work folder not cleaned up: %v", left)
	}
}
