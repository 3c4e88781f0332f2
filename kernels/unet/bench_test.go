package unet

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/gomlx/core/tensors"
)

// benchStep compiles a ControlNet+UNet step and returns a function running
// it once on zero inputs.
func benchStep(b *testing.B, u *UNet, uw *nn.Weights, cn *ControlNet, cw *nn.Weights, sh StepShape) func() {
	b.Helper()
	p, err := CompileStep("step", u, uw, []*ControlNet{cn}, []*nn.Weights{cw}, sh)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	var args []*tensors.Tensor
	for _, s := range u.StepInputs(sh, []*ControlNet{cn}) {
		args = append(args, tensors.FromShape(s))
	}
	return func() {
		if _, err := p.Run(args...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTinyStep times one CFG step (batch 2) of the golden tiny
// ControlNet + UNet at 64×64 pixels.
func BenchmarkTinyStep(b *testing.B) {
	backend, err := nn.NewBackend("go")
	if err != nil {
		b.Fatal(err)
	}
	ucfg, usrc := loadModel(b, "unet")
	ccfg, csrc := loadModel(b, "controlnet")
	u, _ := NewUNet(ucfg)
	cn, _ := NewControlNet(ccfg)
	run := benchStep(b, u, nn.NewWeights(backend, usrc, nn.Widen), cn, nn.NewWeights(backend, csrc, nn.Widen),
		StepShape{Batch: 2, LatentHeight: 8, LatentWidth: 8, SeqLen: 77, CondScale: 8, NumControlNet: 1})
	run()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
}

// BenchmarkSD15Step times one CFG step (batch 2) of the full-size SD1.5
// ControlNet + UNet (random weights, configs from ../shared/sd15-configs)
// at 256×256 pixels. It needs ~6 GB of memory and minutes; run it with
// `make bench-kernels`.
func BenchmarkSD15Step(b *testing.B) {
	dir := filepath.Join(golden.Dir(b), "..", "sd15-configs")
	if _, err := os.Stat(dir); err != nil {
		b.Skipf("sd15-configs not found: %v", err)
	}
	backend, err := nn.NewBackend("go")
	if err != nil {
		b.Fatal(err)
	}
	ucfg, err := LoadConfig(filepath.Join(dir, "unet", "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	ccfg, err := LoadConfig(filepath.Join(dir, "controlnet", "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	u, _ := NewUNet(ucfg)
	cn, _ := NewControlNet(ccfg)
	uw := nn.NewWeights(backend, nn.RandomSource{Shapes: ucfg.WeightShapes(false), Seed: 1}, nn.Widen)
	cw := nn.NewWeights(backend, nn.RandomSource{Shapes: ccfg.WeightShapes(true), Seed: 2}, nn.Widen)
	run := benchStep(b, u, uw, cn, cw, StepShape{Batch: 2, LatentHeight: 32, LatentWidth: 32, SeqLen: 77, CondScale: 8, NumControlNet: 1})
	run() // first run uploads weights
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run()
	}
}
