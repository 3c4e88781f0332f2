// The golden tests live in the external test package: internal/golden itself
// imports safetensors, so an in-package test importing it would be a cycle.
package safetensors_test

import (
	"encoding/binary"
	"path/filepath"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Every safetensors file in the golden set must open and decode.
func TestOpenGoldenFiles(t *testing.T) {
	dir := golden.Dir(t)
	paths, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	more, _ := filepath.Glob(filepath.Join(dir, "tiny-sd15", "*", "*.safetensors"))
	paths = append(paths, more...)
	if len(paths) < 10 {
		t.Fatalf("found only %d golden safetensors files", len(paths))
	}
	for _, p := range paths {
		f, err := safetensors.Open(p)
		if err != nil {
			t.Errorf("Open: %v", err)
			continue
		}
		for _, name := range f.Names() {
			ti, _ := f.Info(name)
			if ti.DType.IsFloat() {
				if _, _, err := f.Float32s(name); err != nil {
					t.Errorf("%v", err)
				}
			} else if _, _, err := f.Int64s(name); err != nil {
				t.Errorf("%v", err)
			}
		}
		if err := f.Close(); err != nil {
			t.Errorf("Close %s: %v", p, err)
		}
	}
}

// The fp16 single-file checkpoint was made from tiny-sd15/ by casting every
// tensor to float16 with round-to-nearest-even: our Float32ToHalf applied to
// the F32 diffusers tensors must give exactly its bits.
func TestSingleFileFP16MatchesRoundedF32(t *testing.T) {
	single, err := safetensors.Open(golden.Path(t, "tiny-sd15-single-file-fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	for _, tc := range []struct{ singleKey, file, key string }{
		{"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "tiny-sd15/text_encoder/model.safetensors", "text_model.embeddings.token_embedding.weight"},
		{"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", "tiny-sd15/text_encoder/model.safetensors", "text_model.embeddings.position_embedding.weight"},
		{"cond_stage_model.transformer.text_model.final_layer_norm.weight", "tiny-sd15/text_encoder/model.safetensors", "text_model.final_layer_norm.weight"},
		{"model.diffusion_model.time_embed.0.weight", "tiny-sd15/unet/diffusion_pytorch_model.safetensors", "time_embedding.linear_1.weight"},
		{"model.diffusion_model.input_blocks.0.0.weight", "tiny-sd15/unet/diffusion_pytorch_model.safetensors", "conv_in.weight"},
		{"first_stage_model.encoder.conv_in.weight", "tiny-sd15/vae/diffusion_pytorch_model.safetensors", "encoder.conv_in.weight"},
	} {
		raw, ti, err := single.Raw(tc.singleKey)
		if err != nil {
			t.Fatal(err)
		}
		if ti.DType != safetensors.F16 {
			t.Fatalf("%s is %s, want F16", tc.singleKey, ti.DType)
		}
		ref, err := safetensors.Open(golden.Path(t, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		want, shape, err := ref.Float32s(tc.key)
		ref.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(shape, ti.Shape) {
			t.Fatalf("%s: shape %v, diffusers %s has %v", tc.singleKey, ti.Shape, tc.key, shape)
		}
		mismatches := 0
		for i, v := range want {
			got := binary.LittleEndian.Uint16(raw[2*i:])
			if exp := safetensors.Float32ToHalf(v); got != exp {
				if mismatches++; mismatches <= 5 {
					t.Errorf("%s[%d]: file has %#04x, Float32ToHalf(%g) = %#04x", tc.singleKey, i, got, v, exp)
				}
			}
		}
		if mismatches > 0 {
			t.Errorf("%s: %d of %d elements differ", tc.singleKey, mismatches, len(want))
		} else {
			t.Logf("%s: %d elements bit-identical", tc.singleKey, len(want))
		}
	}
}
