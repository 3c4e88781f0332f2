// Package e2e holds end-to-end tests that cross the compiler/function
// boundary: a bundle compiled from a checkpoint, loaded by the function's
// pipeline, must give diffusers' images. It exists so that neither
// compiler/ nor function/ imports the other, even in tests.
package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/internal/golden"
)

// generateDDIM runs the golden e2e DDIM case (prompts, control PNG, stored
// initial latents) on a bundle.
func generateDDIM(t *testing.T, b *artifacts.Bundle) *pipeline.Result {
	t.Helper()
	comps, err := pipeline.LoadBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	defer comps.Close()
	p, err := pipeline.New(comps, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	control, err := os.ReadFile(golden.Path(t, "e2e_control_64.png"))
	if err != nil {
		t.Fatal(err)
	}
	lat, _ := golden.Float32s(t, "e2e_ref.safetensors", "latents_init")
	res, err := p.Generate(context.Background(), pipeline.Request{
		Prompt: "a photo of a red cube on a wooden table, high quality", NegativePrompt: "blurry, low quality",
		Controls: []pipeline.Control{{Image: control, Scale: 1, GuidanceEnd: 1}},
		Width:    64, Height: 64, Steps: 4, GuidanceScale: 7.5, Scheduler: "ddim", Latents: lat, NumImages: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// An fp32 bundle of the golden diffusers folder reproduces diffusers' DDIM
// generation to the pipeline's own tolerance (1e-3); an fp16 bundle stays
// within fp16 rounding of it (1e-2).
func TestBundleGeneratesDiffusersImage(t *testing.T) {
	want, _ := golden.Float32s(t, "e2e_ref.safetensors", "ddim_final_latents")
	for _, tc := range []struct {
		dtype string
		tol   float64
	}{{artifacts.DTypeFloat32, 1e-3}, {artifacts.DTypeFloat16, 1e-2}} {
		out := filepath.Join(t.TempDir(), "bundle")
		if _, err := compiler.Compile(compiler.Options{Model: golden.Path(t, "tiny-sd15"), DType: tc.dtype, Out: out,
			Buckets: []artifacts.Bucket{{Width: 64, Height: 64, Batch: 1}}}); err != nil {
			t.Fatal(err)
		}
		b, err := artifacts.Open(out, artifacts.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := generateDDIM(t, b)
		golden.AssertClose(t, "ddim final latents from "+tc.dtype+" bundle", got.Latents, want, tc.tol)
	}
}
