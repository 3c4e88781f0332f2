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
