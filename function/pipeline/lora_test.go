package pipeline

import (
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/nn"
)

// An unmerged LoRA whose target no layer applies (a GroupNorm scale) is
// refused: the reference would silently differ from the merged model.
func TestUnappliedLoRA(t *testing.T) {
	src := nn.RandomSource{Shapes: map[string][]int{"down": {4, 32}, "up": {32, 4}}, Seed: 1}
	loras := &nn.LoRAs{Source: src, List: []nn.LoRA{{Target: "conv_norm_out.weight", Down: "down", Up: "up", Scale: 1}}}
	_, err := New(openTiny(t, "controlnet"), Options{Buckets: []Bucket{{Width: 64, Height: 64}}, UNetLoRAs: loras})
	if err == nil || !strings.Contains(err.Error(), `"conv_norm_out.weight"`) {
		t.Errorf("error %v, want the unapplied target named", err)
	}
}
