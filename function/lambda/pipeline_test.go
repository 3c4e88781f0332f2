package lambda

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/internal/testmodel"
)

// An S3 event through the real pipeline writes the image diffusers makes
// of the same request (golden e2e_extra_ref "seeded"), and a deadline
// stops a generation between steps without harming the warm model.
func TestRealPipeline(t *testing.T) {
	env := newTestEnv(t, testmodel.TinyService(t), nil)
	control, err := os.ReadFile(golden.Path(t, "e2e_control_64.png"))
	if err != nil {
		t.Fatal(err)
	}
	env.store.put("in", "input/cube.png", control, nil)
	env.store.put("in", "input/cube.png.json", mustJSON(t, map[string]any{
		"prompt":              "a photo of a red cube on a wooden table, high quality",
		"negative_prompt":     "blurry, low quality",
		"num_inference_steps": 4,
		"guidance_scale":      7.5,
		"scheduler":           "ddim",
		"seed":                31337,
	}), nil)
	if _, err := env.invoke(t, s3Payload(t, "ObjectCreated:Put", "in", "input/cube.png")); err != nil {
		t.Fatalf("S3 event: %v\n%s", err, env.logs)
	}
	out, err := env.store.Get(t.Context(), "out", "output/cube.png", 1<<20)
	if err != nil {
		t.Fatalf("output: %v\n%s", err, env.logs)
	}
	img, err := png.Decode(bytes.NewReader(out.Data))
	if err != nil {
		t.Fatal(err)
	}
	want, shape := golden.Float32s(t, "e2e_extra_ref.safetensors", "seeded_image")
	h, w := shape[1], shape[2]
	var maxDiff float64
	for y := range h {
		for x := range w {
			r, g, b, _ := img.At(x, y).RGBA()
			for c, v := range []uint32{r, g, b} {
				maxDiff = max(maxDiff, abs(float64(v>>8)-float64(want[(y*w+x)*3+c])*255))
			}
		}
	}
	if maxDiff > 2 {
		t.Errorf("output differs from diffusers by %.2f/255 (limit 2)", maxDiff)
	}

	// 150 steps take seconds; the deadline comes first. The pipeline
	// stops between steps, so the margin covers the step in flight.
	cfg := DefaultConfig()
	cfg.DeadlineMargin = 400 * time.Millisecond
	env.h.cfg = cfg
	body := mustJSON(t, map[string]any{"prompt": "x", "control_image": control, "num_inference_steps": 150, "seed": 1})
	ctx := lambdaContext(t, 1600*time.Millisecond)
	start := time.Now()
	_, err = env.h.Invoke(ctx, body)
	if errorType(err) != "GenerationTimeout" || ctx.Err() != nil {
		t.Errorf("after %s: %v, want a GenerationTimeout before the deadline", time.Since(start), err)
	}
	reply, err := env.invoke(t, mustJSON(t, map[string]any{"prompt": "x", "control_image": control, "num_inference_steps": 2, "seed": 1}))
	var resp DirectResponse
	if err != nil || json.Unmarshal(reply, &resp) != nil || resp.Response == nil || len(resp.Images) != 1 {
		t.Errorf("after the timeout: %v %.200s", err, reply)
	}
	if strings.Contains(env.logs.String(), "red cube") {
		t.Errorf("the log holds prompt text")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
