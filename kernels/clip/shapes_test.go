package clip

import (
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

func TestWeightShapesMatchCheckpoint(t *testing.T) {
	cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	golden.AssertCheckpointShapes(t, golden.Path(t, "tiny-sd15", "text_encoder", "model.safetensors"), cfg.WeightShapes())
}
