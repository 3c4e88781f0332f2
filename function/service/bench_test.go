package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"testing"

	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/internal/testmodel"
)

func benchRequestBody(b *testing.B) []byte {
	b.Helper()
	control, err := os.ReadFile(golden.Path(b, "e2e_control_64.png"))
	if err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"prompt": "a photo of a red cube on a wooden table, high quality", "negative_prompt": "blurry, low quality",
		"control_image": base64.StdEncoding.EncodeToString(control), "width": 64, "height": 64,
		"num_inference_steps": 4, "scheduler": "ddim", "seed": 31337,
	})
	return body
}

// BenchmarkRequestOverhead is the warm cost outside the model: decoding
// and validating a request and encoding a 512×512 PNG response image.
func BenchmarkRequestOverhead(b *testing.B) {
	body := benchRequestBody(b)
	info := schema.ModelInfo{Buckets: []schema.Size{{Width: 64, Height: 64}}, ControlNets: 1}
	img := image.NewRGBA(image.Rect(0, 0, 512, 512))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := schema.Decode(body, info); err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTinyRequest is one full request (4 DDIM steps, CFG, 64×64) on
// the golden tiny model through the service.
func BenchmarkTinyRequest(b *testing.B) {
	svc := testmodel.TinyService(b)
	body := benchRequestBody(b)
	req, err := schema.Decode(body, svc.Info())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := svc.Generate(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
