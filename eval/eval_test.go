package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/eval/metrics"
)

// TestRunDemo is the whole evaluation on the built-in demo model (with its
// demo LoRA): 2 prompts × 2 control maps × 1 seed at 64×64, 4 steps.
func TestRunDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 8 images")
	}
	cfg := DefaultConfig()
	cfg.Width, cfg.Height, cfg.Steps = DemoSize, DemoSize, DemoSteps
	cfg.Prompts = DefaultPrompts()[:2]
	controls, err := BuiltinControls(cfg.Width, cfg.Height, MapCircles, MapBoxes)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Controls = controls
	cfg.WorkDir = t.TempDir()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(cfg.WorkDir); len(left) != 0 {
		t.Errorf("work folder not cleaned up: %v", left)
	}

	s := r.Summary
	t.Logf("fp16 vs fp32 on the demo model: PSNR min %s / mean %s dB, SSIM min %.6f, MS-SSIM min %.6f (%d scales), latent max |Δ| %.3g, mean |Δ| %.3g",
		fmtDB(s.PSNRMin), fmtDB(s.PSNRMean), s.SSIMMin, s.MSSSIMMin, r.Settings.MSSSIMScales, s.LatentMaxAbsDiff, s.LatentMeanAbsDiff)
	t.Logf("edge F1: optimized %.4f, reference %.4f, max |Δ| %.4f", s.F1Optimized, s.F1Reference, s.F1DeltaMaxAbs)

	if s.Samples != 4 || len(r.Samples) != 4 {
		t.Fatalf("%d samples, want 4", s.Samples)
	}
	if !r.Model.Demo || len(r.Model.LoRAs) != 1 || !r.Model.LoRAs[0].Demo {
		t.Errorf("model info %+v: want the demo model with the demo LoRA", r.Model)
	}
	if r.Optimized.LoRAs != 1 || r.Reference.LoRAs != 1 {
		t.Errorf("LoRA files: optimized %d (merged), reference %d (unmerged); want 1 each", r.Optimized.LoRAs, r.Reference.LoRAs)
	}
	if r.Optimized.DType != "float16" || r.Reference.DType != "float32" || r.Optimized.BuildID == r.Reference.BuildID {
		t.Errorf("variants %+v / %+v", r.Optimized, r.Reference)
	}
	// fp16 weights against fp32 on four steps: the pictures must agree
	// closely, though not bit for bit.
	if !(s.PSNRMin >= 30) {
		t.Errorf("PSNR min %v dB: fp16 drifted from fp32", s.PSNRMin)
	}
	if !(s.SSIMMin >= 0.95) || !(s.MSSSIMMin >= 0.95) {
		t.Errorf("SSIM min %v, MS-SSIM min %v: fp16 drifted from fp32", s.SSIMMin, s.MSSSIMMin)
	}
	if r.Settings.MSSSIMScales != 3 || r.Settings.MSSSIMNote == "" {
		t.Errorf("64x64 MS-SSIM: %d scales, note %q; want 3 with a note", r.Settings.MSSSIMScales, r.Settings.MSSSIMNote)
	}
	if !(s.LatentMaxAbsDiff > 0) || math.IsInf(float64(s.LatentMaxAbsDiff), 0) {
		t.Errorf("latent max |Δ| = %v: want a small positive difference", s.LatentMaxAbsDiff)
	}
	if !(s.F1DeltaMaxAbs <= 0.05) {
		t.Errorf("F1 optimized vs reference differ by up to %v", s.F1DeltaMaxAbs)
	}
	for _, c := range r.Controls {
		if c.EdgePixels == 0 || !(c.EdgeDensity > 0 && c.EdgeDensity < 0.25) {
			t.Errorf("control %s: %d edge pixels, density %v", c.Name, c.EdgePixels, c.EdgeDensity)
		}
	}

	out := filepath.Join(t.TempDir(), "report")
	if err := r.Write(out); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "grid.png report.json report.md" {
		t.Errorf("report folder holds %v, want exactly grid.png report.json report.md (no temporary files)", names)
	}
	data, err := os.ReadFile(filepath.Join(out, ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("report.json does not parse: %v", err)
	}
	if back.Version != ReportVersion || len(back.Samples) != 4 || back.Summary.PSNRMin != s.PSNRMin {
		t.Errorf("report.json round trip: %+v", back.Summary)
	}
	md, err := os.ReadFile(filepath.Join(out, ReportMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PSNR", "MS-SSIM", "edge F1", "applied unmerged", "grid.png", "p1-boxes-s1"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	g, err := os.ReadFile(filepath.Join(out, GridPNG))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(g))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 3*64+4*gridGap || b.Dy() != 4*64+5*gridGap {
		t.Errorf("grid is %v, want 3 columns × 4 rows of 64 px", b)
	}
	// The grid's first cell is the first sample's control map.
	if r, g, b, _ := img.At(gridGap+1, gridGap+1).RGBA(); (r|g|b)>>8 != uint32(controls[0].Map.Pix[3*(1*64+1)]) {
		t.Errorf("grid cell (0,0) does not hold the control map")
	}
	// Rewriting replaces the files in place.
	if err := r.Write(out); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	maps, err := BuiltinControls(64, 64, MapGrid)
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig()
	base.Width, base.Height, base.Controls = 64, 64, maps
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"size not multiple of 8", func(c *Config) { c.Width = 60 }},
		{"no steps", func(c *Config) { c.Steps = 0 }},
		{"no seeds", func(c *Config) { c.Seeds = nil }},
		{"repeated seed", func(c *Config) { c.Seeds = []uint64{3, 1, 3} }},
		{"empty prompts", func(c *Config) { c.Prompts = []string{} }},
		{"empty controls", func(c *Config) { c.Controls = []Control{} }},
		{"control of another size", func(c *Config) { c.Width, c.Height = 128, 128 }},
		{"duplicate control", func(c *Config) { c.Controls = append(c.Controls, c.Controls[0]) }},
		{"tolerance", func(c *Config) { c.EdgeTolerance = -1 }},
		{"canny", func(c *Config) { c.CannyLow = -1 }},
		{"nan guidance", func(c *Config) { c.GuidanceScale = math.NaN() }},
		{"no scheduler", func(c *Config) { c.Scheduler = "" }},
		{"ssim setting", func(c *Config) { c.SSIM.Sigma = -1 }},
		{"smaller than window", func(c *Config) {
			c.Width, c.Height = 8, 8
			c.Controls, _ = BuiltinControls(8, 8, MapGrid)
		}},
	}
	c := base
	if err := c.validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			c.Seeds = append([]uint64(nil), base.Seeds...)
			c.Controls = append([]Control(nil), base.Controls...)
			tt.edit(&c)
			if err := c.validate(); err == nil {
				t.Error("no error")
			}
			// Run refuses before writing or compiling anything.
			c.WorkDir = t.TempDir()
			if _, err := Run(context.Background(), c); err == nil {
				t.Error("Run: no error")
			}
		})
	}
}

func TestReportWriteNeedsImages(t *testing.T) {
	r := &Report{Samples: []Sample{{ID: "x"}}}
	if err := r.Write(t.TempDir()); err == nil {
		t.Error("writing a report without its images: no error")
	}
}

func TestFloatJSON(t *testing.T) {
	tests := []struct {
		v    float64
		json string
	}{
		{1.5, `1.5`}, {0, `0`}, {-2e-9, `-2e-09`},
		{math.Inf(1), `"+Inf"`}, {math.Inf(-1), `"-Inf"`}, {math.NaN(), `"NaN"`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(Float(tt.v))
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.v, b, err, tt.json)
			continue
		}
		var back Float
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !(float64(back) == tt.v || math.IsNaN(tt.v) && math.IsNaN(float64(back))) {
			t.Errorf("round trip of %v gave %v", tt.v, back)
		}
	}
	var f Float
	for _, bad := range []string{`"large"`, `true`, `{}`} {
		if err := json.Unmarshal([]byte(bad), &f); err == nil {
			t.Errorf("Unmarshal(%s): no error", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	inf := Float(math.Inf(1))
	r := &Report{Samples: []Sample{
		{PSNR: inf, SSIM: 1, MSSSIM: 1, LatentMaxAbsDiff: 0, LatentMeanAbsDiff: 0,
			EdgeOptimized: metrics.EdgeScore{F1: 0.5}, EdgeReference: metrics.EdgeScore{F1: 0.5}},
		{PSNR: 40, SSIM: 0.98, MSSSIM: 0.99, LatentMaxAbsDiff: 0.02, LatentMeanAbsDiff: 0.004,
			EdgeOptimized: metrics.EdgeScore{F1: 0.4}, EdgeReference: metrics.EdgeScore{F1: 0.5}, F1Delta: -0.1},
		{PSNR: 50, SSIM: 0.99, MSSSIM: 0.97, LatentMaxAbsDiff: 0.01, LatentMeanAbsDiff: 0.002,
			EdgeOptimized: metrics.EdgeScore{F1: 0.6}, EdgeReference: metrics.EdgeScore{F1: 0.55}, F1Delta: 0.05},
	}}
	r.summarize()
	s := r.Summary
	near := func(a Float, b float64) bool { return math.Abs(float64(a)-b) < 1e-12 }
	if s.Samples != 3 || s.Identical != 1 || s.PSNRMin != 40 || !near(s.PSNRMean, 45) {
		t.Errorf("PSNR summary %+v: want min 40, mean 45 over the 2 finite, 1 identical", s)
	}
	if s.SSIMMin != 0.98 || !near(s.SSIMMean, (1+0.98+0.99)/3) || s.MSSSIMMin != 0.97 {
		t.Errorf("SSIM summary %+v", s)
	}
	if s.LatentMaxAbsDiff != 0.02 || !near(s.LatentMeanAbsDiff, 0.002) {
		t.Errorf("latent summary %+v", s)
	}
	if !near(s.F1Optimized, 0.5) || !near(s.F1Reference, 1.55/3) || !near(s.F1DeltaMean, -0.05/3) || !near(s.F1DeltaMaxAbs, 0.1) {
		t.Errorf("F1 summary %+v", s)
	}
	all := &Report{Samples: []Sample{{PSNR: inf}, {PSNR: inf}}}
	all.summarize()
	if !math.IsInf(float64(all.Summary.PSNRMean), 1) || !math.IsInf(float64(all.Summary.PSNRMin), 1) || all.Summary.Identical != 2 {
		t.Errorf("all identical: %+v, want +Inf", all.Summary)
	}
	(&Report{}).summarize() // no samples: nothing to divide by
}
