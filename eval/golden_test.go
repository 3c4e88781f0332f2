package eval

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

// TestCommandGoldenModel runs the command on a checkpoint given by path —
// the shared tiny SD1.5 diffusers folder, whose weights came from
// diffusers — with its kohya LoRA and a user control folder, the way a
// user runs it on a real model.
func TestCommandGoldenModel(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 4 images")
	}
	model := golden.Path(t, "tiny-sd15")
	lora := golden.Path(t, "lora_kohya.safetensors")
	control, err := os.ReadFile(golden.Path(t, "e2e_control_64.png"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	controls := filepath.Join(dir, "controls")
	if err := os.Mkdir(controls, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(controls, "edges.png"), control, 0o644); err != nil {
		t.Fatal(err)
	}
	prompts := filepath.Join(dir, "prompts.txt")
	if err := os.WriteFile(prompts, []byte("a photo of a house\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "report")
	var stdout, stderr bytes.Buffer
	err = command([]string{
		"--model", model, "--lora", lora + ":0.75", "--prompts", prompts, "--controls", controls,
		"--maps", "grid", "--size", "64x64", "--steps", "3", "--seeds", "7", "--out", out,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	t.Logf("\n%s", stdout.String())
	data, err := os.ReadFile(filepath.Join(out, ReportJSON))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Model.Demo || r.Model.Path != model || len(r.Model.LoRAs) != 1 || r.Model.LoRAs[0].Scale != 0.75 || r.Optimized.LoRAs != 1 {
		t.Errorf("model info %+v, optimized %+v", r.Model, r.Optimized)
	}
	if len(r.Samples) != 2 || r.Samples[0].Control != "grid" || r.Samples[1].Control != "edges.png" || r.Samples[1].Seed != 7 {
		t.Fatalf("samples %+v", r.Samples)
	}
	if !(r.Summary.PSNRMin >= 30) || !(r.Summary.F1DeltaMaxAbs <= 0.05) {
		t.Errorf("fp16 vs fp32 on tiny-sd15: PSNR min %v dB, F1 max |Δ| %v", r.Summary.PSNRMin, r.Summary.F1DeltaMaxAbs)
	}
	if !strings.Contains(stdout.String(), filepath.Join(out, GridPNG)) {
		t.Errorf("stdout does not list the grid:\n%s", stdout.String())
	}
}
