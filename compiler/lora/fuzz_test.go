package lora

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// fuzzModel is the fixed model fuzzed files are merged into: the toy UNet
// and one text encoder layer's attention and MLP.
func fuzzModel() mapSource {
	rng := rand.New(rand.NewPCG(42, 43))
	m := toyUNet(rng)
	for name, shape := range map[string][]int{
		"text_model.encoder.layers.0.self_attn.q_proj.weight": {3, 3},
		"text_model.encoder.layers.0.mlp.fc1.weight":          {4, 3},
	} {
		m[name] = safetensors.Float32Tensor(name, shape, randValues(rng, shape...))
	}
	return m
}

// FuzzParse feeds arbitrary bytes to Parse and, when they parse, merges the
// result into a fixed toy model. Nothing may panic; every error must name
// the file; every parsed module must be a consistent low-rank pair; every
// merge that succeeds must serve its targets. Seeds: testdata/fuzz/FuzzParse
// (written by TestWriteFuzzSeeds).
func FuzzParse(f *testing.F) {
	base := fuzzModel()
	shapes := base.shapes()
	const name = "fuzz.safetensors"
	f.Fuzz(func(t *testing.T, data []byte, lenient bool) {
		opts := Options{Lenient: lenient}
		file, err := Parse(name, data, opts)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, c := range []Component{UNet, TextEncoder} {
			for _, m := range file.For(c) {
				okShape := (len(m.Down) == 2 || len(m.Down) == 4) && (len(m.Up) == 2 || len(m.Up) == 4)
				if !okShape || m.Rank <= 0 || m.Down[0] != m.Rank || m.Up[1] != m.Rank || math.IsNaN(m.Alpha) || math.IsInf(m.Alpha, 0) {
					t.Fatalf("inconsistent module %+v", m)
				}
			}
			src, rep, err := Merge(c, base, shapes, []Applied{{file, 0.5}}, opts)
			if err != nil {
				if !strings.Contains(err.Error(), name) {
					t.Fatalf("merge error does not name the file: %v", err)
				}
				continue
			}
			for _, target := range rep.Targets {
				dt, shape, raw, err := src.Tensor(target)
				if err != nil {
					t.Fatalf("%s: %v", target, err)
				}
				n := 1
				for _, d := range shape {
					n *= d
				}
				if dt != safetensors.F32 || len(raw) != 4*n || fmt.Sprint(shape) != fmt.Sprint(shapes[target]) {
					t.Fatalf("%s: %s %v with %d bytes", target, dt, shape, len(raw))
				}
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzParse when
// LORA_WRITE_FUZZ_SEEDS is set; otherwise it only checks the seeds exist.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if os.Getenv("LORA_WRITE_FUZZ_SEEDS") == "" {
		if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
			t.Fatalf("no fuzz seeds in %s (%v): run with LORA_WRITE_FUZZ_SEEDS=1", dir, err)
		}
		return
	}
	rng := rand.New(rand.NewPCG(7, 7))
	f32 := func(name string, shape ...int) safetensors.Tensor {
		return safetensors.Float32Tensor(name, shape, randValues(rng, shape...))
	}
	alpha := func(name string, v float32) safetensors.Tensor {
		return safetensors.Float32Tensor(name, nil, []float32{v})
	}
	const k = "lora_unet_mid_block_attentions_0_proj_out"
	const c1 = "lora_unet_mid_block_resnets_0_conv1"
	const te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
	const p = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
	seeds := map[string]struct {
		ts      []safetensors.Tensor
		lenient bool
	}{
		"kohya": {ts: []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3), f32(k+".lora_up.weight", 3, 2), alpha(k+".alpha", 4),
			f32(c1+".lora_down.weight", 2, 2, 3, 3), f32(c1+".lora_up.weight", 4, 2, 1, 1), alpha(c1+".alpha", 1),
			f32(te+".lora_down.weight", 1, 3), f32(te+".lora_up.weight", 3, 1)}},
		"peft": {ts: []safetensors.Tensor{f32(p+".lora_A.weight", 2, 5), f32(p+".lora_B.weight", 3, 2),
			f32("text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight", 2, 3), f32("text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight", 4, 2)}},
		"diffusers_old": {ts: []safetensors.Tensor{
			f32("mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight", 1, 3),
			f32("mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", 3, 1)}},
		"fp16_lenient_junk": {lenient: true, ts: []safetensors.Tensor{
			safetensors.Float16Tensor(k+".lora_down.weight", []int{2, 3}, randValues(rng, 2, 3)),
			safetensors.Float16Tensor(k+".lora_up.weight", []int{3, 2}, randValues(rng, 3, 2)),
			f32("bundle_emb.x.string_to_param.*", 3),
			f32("lora_unet_nothing_here.lora_down.weight", 1, 3), f32("lora_unet_nothing_here.lora_up.weight", 3, 1)}},
		"rank_mismatch": {ts: []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3), f32(k+".lora_up.weight", 3, 3)}},
		"wrong_width":   {ts: []safetensors.Tensor{f32(k+".lora_down.weight", 2, 8), f32(k+".lora_up.weight", 3, 2)}},
		"sdxl":          {ts: []safetensors.Tensor{f32("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, 3)}},
		"loha":          {ts: []safetensors.Tensor{f32(k+".hada_w1_a", 3, 2), f32(k+".hada_w1_b", 2, 3)}},
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		img := encode(t, s.ts)
		if name == "kohya" {
			writeSeed(t, dir, "truncated", img[:len(img)-5], false)
		}
		writeSeed(t, dir, name, img, s.lenient)
	}
}

func writeSeed(t *testing.T, dir, name string, data []byte, lenient bool) {
	t.Helper()
	body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nbool(%t)\n", strconv.Quote(string(data)), lenient)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
