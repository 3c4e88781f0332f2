package unet

import (
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

// WeightShapes must list exactly the tensors of the real diffusers
// checkpoints, with their shapes.
func TestWeightShapesMatchCheckpoints(t *testing.T) {
	for _, folder := range []string{"unet", "controlnet"} {
		cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", folder, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		golden.AssertCheckpointShapes(t, golden.Path(t, "tiny-sd15", folder, "diffusion_pytorch_model.safetensors"),
			cfg.WeightShapes(folder == "controlnet"))
	}
}
