package vae

import (
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

func TestWeightShapesMatchCheckpoint(t *testing.T) {
	cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	golden.AssertCheckpointShapes(t, golden.Path(t, "tiny-sd15", "vae", "diffusion_pytorch_model.safetensors"), cfg.WeightShapes())
}
