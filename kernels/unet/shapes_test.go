package unet

import (
	"slices"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// WeightShapes must list exactly the tensors of the real diffusers
// checkpoints, with their shapes.
func TestWeightShapesMatchCheckpoints(t *testing.T) {
	for _, folder := range []string{"unet", "controlnet"} {
		cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", folder, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Open(golden.Path(t, "tiny-sd15", folder, "diffusion_pytorch_model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		want := cfg.WeightShapes(folder == "controlnet")
		for _, name := range f.Names() {
			info, _ := f.Info(name)
			got, ok := want[name]
			if !ok {
				t.Errorf("%s: checkpoint tensor %s missing from WeightShapes", folder, name)
				continue
			}
			if !slices.Equal(got, info.Shape) {
				t.Errorf("%s: %s shape %v, checkpoint has %v", folder, name, got, info.Shape)
			}
			delete(want, name)
		}
		for name := range want {
			t.Errorf("%s: WeightShapes lists %s, absent from the checkpoint", folder, name)
		}
	}
}
