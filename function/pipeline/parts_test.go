package pipeline

import "testing"

// The step's halves run as separate programs on the loaded weights.
func TestTimeStepParts(t *testing.T) {
	p := newTiny(t, "controlnet")
	parts, err := p.TimeStepParts(64, 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if parts.ControlNets <= 0 || parts.UNet <= 0 {
		t.Errorf("parts %+v: want positive durations", parts)
	}
	if _, err := p.TimeStepParts(60, 64, 1); err == nil {
		t.Error("a size off the latent grid was accepted")
	}
}
