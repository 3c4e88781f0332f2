package service_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/server"
	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/internal/testmodel"
)

// A JSON request through the edge HTTP handler reproduces diffusers'
// seeded e2e case: prompt text, a PNG control map, DDIM 4 steps, CFG 7.5,
// torch.Generator seed 31337 (golden e2e_extra_ref "seeded").
func TestHTTPRequestMatchesDiffusers(t *testing.T) {
	svc := testmodel.TinyService(t)
	ready := make(chan struct{})
	close(ready)
	h := server.New(svc, server.Options{Ready: ready})
	control, err := os.ReadFile(golden.Path(t, "e2e_control_64.png"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"prompt":              "a photo of a red cube on a wooden table, high quality",
		"negative_prompt":     "blurry, low quality",
		"control_image":       base64.StdEncoding.EncodeToString(control),
		"width":               64,
		"height":              64,
		"num_inference_steps": 4,
		"guidance_scale":      7.5,
		"scheduler":           "ddim",
		"seed":                31337,
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/generate", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	var resp schema.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Seed != 31337 || resp.BuildID != testmodel.BuildID || resp.RequestID == "" || len(resp.Images) != 1 || resp.Steps != 4 {
		t.Fatalf("response %+v", resp)
	}
	img, err := png.Decode(bytes.NewReader(resp.Images[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	want, shape := golden.Float32s(t, "e2e_extra_ref.safetensors", "seeded_image")
	h0, w0 := shape[1], shape[2]
	var maxDiff float64
	for y := 0; y < h0; y++ {
		for x := 0; x < w0; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			for c, v := range []uint32{r, g, b} {
				ref := float64(want[(y*w0+x)*3+c]) * 255
				if d := abs(float64(v>>8) - ref); d > maxDiff {
					maxDiff = d
				}
			}
		}
	}
	if maxDiff > 2 {
		t.Errorf("image differs from diffusers by %.2f/255 (limit 2)", maxDiff)
	}
	t.Logf("max |image - diffusers| = %.3f/255; timings %v", maxDiff, resp.TimingsMS)
}

func TestFieldErrors(t *testing.T) {
	svc := testmodel.TinyService(t)
	ready := make(chan struct{})
	close(ready)
	h := server.New(svc, server.Options{Ready: ready})
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"clip skip", map[string]any{"clip_skip": 1}, "clip_skip"},
		{"not an image", map[string]any{}, "control_image"},
	}
	for _, c := range cases {
		c.body["prompt"] = "x"
		if _, ok := c.body["control_image"]; !ok && c.name != "not an image" {
			png, _ := os.ReadFile(golden.Path(t, "e2e_control_64.png"))
			c.body["control_image"] = base64.StdEncoding.EncodeToString(png)
		}
		body, _ := json.Marshal(c.body)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/generate", bytes.NewReader(body)))
		if rec.Code != http.StatusBadRequest || !bytes.Contains(rec.Body.Bytes(), []byte(c.field)) {
			t.Errorf("%s: status %d body %s", c.name, rec.Code, rec.Body.String())
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
