package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// The single file maps to exactly the tiny-sd15 tensors rounded to fp16,
// with configs from a folder or inferred.
func TestSingleFileModel(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	for _, tc := range []struct {
		name     string
		opts     Options
		inferred bool
	}{
		{"config folder", Options{ConfigDir: tiny}, false},
		{"inferred", Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenModel(goldenPath(t, singleFile), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Layout != SingleFile {
				t.Errorf("layout %v", m.Layout)
			}
			assertSameTensors(t, m.UNet.Source, filepath.Join(tiny, "unet", "diffusion_pytorch_model.safetensors"), true)
			assertSameTensors(t, m.VAE.Source, filepath.Join(tiny, "vae", "diffusion_pytorch_model.safetensors"), true)
			assertSameTensors(t, m.TextEncoder.Source, filepath.Join(tiny, "text_encoder", "model.safetensors"), true)
			for _, c := range []Component{m.UNet, m.VAE, m.TextEncoder} {
				if c.Inferred != tc.inferred {
					t.Errorf("%s: Inferred = %v", c.Name, c.Inferred)
				}
				if !slices.Contains(c.Files, m.Path) {
					t.Errorf("%s: Files %v lack the checkpoint", c.Name, c.Files)
				}
			}
			if m.TokenizerDir != filepath.Join(tiny, "tokenizer") {
				t.Errorf("tokenizer %q", m.TokenizerDir)
			}
			if tc.inferred != (m.SchedulerFile == "") {
				t.Errorf("scheduler file %q", m.SchedulerFile)
			}
			t.Logf("warnings: %q", m.Warnings)
		})
	}
}

// The original ControlNet file, with and without the control_model.
// prefix, maps to exactly tiny-sd15/controlnet rounded to fp16.
func TestSingleFileControlNet(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	plain := goldenPath(t, controlNetFile)
	prefixed := filepath.Join(t.TempDir(), "control_prefixed.safetensors")
	// A full cldm checkpoint: control_model.* beside the SD model it was
	// trained on, which must be skipped.
	rewrite(t, plain, prefixed, func(n string) string { return ldmControlNetPrefix + n },
		f32Tensor(ldmUNetPrefix+"input_blocks.0.0.weight", []int{2, 2, 1, 1}), f32Tensor("alphas_cumprod", []int{4}))
	for _, file := range []string{plain, prefixed} {
		for _, tc := range []struct {
			name string
			opts Options
		}{
			{"config folder", Options{ConfigDir: filepath.Join(tiny, "controlnet")}},
			{"inferred", Options{Hints: tinyHints}},
		} {
			t.Run(filepath.Base(file)+"/"+tc.name, func(t *testing.T) {
				c, err := OpenControlNet(file, tc.opts)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				assertSameTensors(t, c.Source, filepath.Join(tiny, "controlnet", "diffusion_pytorch_model.safetensors"), true)
				want, err := unet.LoadConfig(filepath.Join(tiny, "controlnet", "config.json"))
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(c.Config, want) {
					t.Errorf("config\n got %+v\nwant %+v", c.Config, want)
				}
			})
		}
	}
}

// Inference reads every field the weights determine; with the tiny
// model's group and head counts as hints, it reproduces its configs.
func TestInferredConfigs(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	m, err := OpenModel(goldenPath(t, singleFile), Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	wantU, err := unet.LoadConfig(filepath.Join(tiny, "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.UNetConfig, wantU) {
		t.Errorf("unet config\n got %+v\nwant %+v", m.UNetConfig, wantU)
	}
	wantV, err := vae.LoadConfig(filepath.Join(tiny, "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	gotV := m.VAEConfig
	// sample_size only sizes tiling and is no weight's business.
	gotV.SampleSize = wantV.SampleSize
	if !reflect.DeepEqual(gotV, wantV) {
		t.Errorf("vae config\n got %+v\nwant %+v", gotV, wantV)
	}
	wantT, err := clip.LoadConfig(filepath.Join(tiny, "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	gotT := m.TextEncoderConfig
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"vocab_size", gotT.VocabSize, wantT.VocabSize},
		{"hidden_size", gotT.HiddenSize, wantT.HiddenSize},
		{"intermediate_size", gotT.IntermediateSize, wantT.IntermediateSize},
		{"num_hidden_layers", gotT.NumHiddenLayers, wantT.NumHiddenLayers},
		{"num_attention_heads", gotT.NumAttentionHeads, wantT.NumAttentionHeads},
		{"max_position_embeddings", gotT.MaxPositionEmbeddings, wantT.MaxPositionEmbeddings},
		{"hidden_act", gotT.HiddenAct, wantT.HiddenAct},
		{"layer_norm_eps", gotT.LayerNormEps, wantT.LayerNormEps},
		{"eos_token_id", gotT.EOSTokenID, wantT.EOSTokenID},
	} {
		if f.got != f.want {
			t.Errorf("text_encoder %s = %v, want %v", f.name, f.got, f.want)
		}
	}
}

// Without hints, inference applies the SD defaults and says so.
func TestInferenceDefaults(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	// The tiny text encoder is 32 wide: no 64-wide heads, so the default
	// head rule must refuse rather than guess.
	_, err := OpenModel(goldenPath(t, singleFile), Options{TokenizerDir: filepath.Join(tiny, "tokenizer")})
	if err == nil || !strings.Contains(err.Error(), "head") {
		t.Fatalf("err = %v, want a head-count error", err)
	}
	ks := fileKeyspace(mustOpen(t, goldenPath(t, singleFile)))
	raw, err := inferUNet(ks, ldmUNetPrefix, false, Hints{})
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	// cross_attention_dim 32 is not SD2's 1024: SD1's 8 heads, 32 groups.
	if cfg["attention_head_dim"] != 8.0 || cfg["norm_num_groups"] != 32.0 {
		t.Errorf("defaults: heads %v groups %v", cfg["attention_head_dim"], cfg["norm_num_groups"])
	}
	heads, err := unetHeads(Hints{}, []int{320, 640, 1280, 1280}, 1024)
	if err != nil || !slices.Equal(heads, []int{5, 10, 20, 20}) {
		t.Errorf("SD2 heads %v, %v", heads, err)
	}
	heads, err = unetHeads(Hints{}, []int{320, 640, 1280, 1280}, 768)
	if err != nil || !slices.Equal(heads, []int{8, 8, 8, 8}) {
		t.Errorf("SD1 heads %v, %v", heads, err)
	}
	if _, err := unetHeads(Hints{AttentionHeads: []int{1, 2, 3}}, []int{32, 64}, 32); err == nil {
		t.Error("3 heads for 2 levels accepted")
	}
}

func mustOpen(t *testing.T, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The diffusers folder opens with its own configs and every component,
// tensors served as stored.
func TestDiffusersFolder(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	m, err := OpenModel(tiny, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		comp Component
		sub  string
		file string
	}{
		{m.UNet, "unet", "diffusion_pytorch_model.safetensors"},
		{m.VAE, "vae", "diffusion_pytorch_model.safetensors"},
		{m.TextEncoder, "text_encoder", "model.safetensors"},
	} {
		ref := filepath.Join(tiny, c.sub, c.file)
		assertSameTensors(t, c.comp.Source, ref, false)
		cfg := filepath.Join(tiny, c.sub, "config.json")
		if !slices.Equal(c.comp.Files, []string{cfg, ref}) {
			t.Errorf("%s files %v", c.sub, c.comp.Files)
		}
		want, _ := os.ReadFile(cfg)
		if string(c.comp.ConfigJSON) != string(want) || c.comp.Inferred {
			t.Errorf("%s config not the folder's", c.sub)
		}
	}
	wantU, _ := unet.LoadConfig(filepath.Join(tiny, "unet", "config.json"))
	if !reflect.DeepEqual(m.UNetConfig, wantU) {
		t.Errorf("unet config %+v", m.UNetConfig)
	}
	if len(m.ControlNets) != 1 {
		t.Fatalf("%d ControlNets, want the pipeline's 1", len(m.ControlNets))
	}
	assertSameTensors(t, m.ControlNets[0].Source, filepath.Join(tiny, "controlnet", "diffusion_pytorch_model.safetensors"), false)
	if m.TokenizerDir != filepath.Join(tiny, "tokenizer") || m.SchedulerFile != filepath.Join(tiny, "scheduler", "scheduler_config.json") {
		t.Errorf("tokenizer %q scheduler %q", m.TokenizerDir, m.SchedulerFile)
	}
	if len(m.Warnings) != 0 {
		t.Errorf("warnings %q", m.Warnings)
	}
	// A ControlNet folder opens alone too.
	c, err := OpenControlNet(filepath.Join(tiny, "controlnet2"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	assertSameTensors(t, c.Source, filepath.Join(tiny, "controlnet2", "diffusion_pytorch_model.safetensors"), false)
}

// copyModel lays out a diffusers folder in a temp dir from tiny-sd15,
// linking the parts the test does not change. skip names components to
// leave out.
func copyModel(t *testing.T, skip ...string) string {
	t.Helper()
	tiny := goldenPath(t, "tiny-sd15")
	dir := t.TempDir()
	for _, c := range []string{"unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"} {
		if slices.Contains(skip, c) {
			continue
		}
		if err := os.Symlink(filepath.Join(tiny, c), filepath.Join(dir, c)); err != nil {
			t.Fatal(err)
		}
	}
	index, err := os.ReadFile(filepath.Join(tiny, "model_index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model_index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// replaceComponent turns a linked component of a copyModel folder into a
// real folder holding the tiny config (edited by editConfig) and nothing
// else.
func replaceComponent(t *testing.T, dir, comp string, editConfig func(map[string]any)) string {
	t.Helper()
	sub := filepath.Join(dir, comp)
	os.Remove(sub)
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(goldenPath(t, "tiny-sd15", comp, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if editConfig != nil {
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		editConfig(cfg)
		if raw, err = json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sub, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return sub
}

// Variant files are chosen by the option, and sharded weights are joined
// through their index.
func TestVariantAndShards(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	dir := copyModel(t, "controlnet")
	index := `{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
	  "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
	  "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
	  "safety_checker": [null, null], "requires_safety_checker": false}`
	if err := os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	half := func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			ts[i].Data, ts[i].DType = toHalf(ts[i].Data), safetensors.F16
		}
		return ts
	}
	// unet: fp16 variant file.
	sub := replaceComponent(t, dir, "unet", nil)
	unetRef := filepath.Join(tiny, "unet", "diffusion_pytorch_model.safetensors")
	if err := safetensors.Write(filepath.Join(sub, "diffusion_pytorch_model.fp16.safetensors"), half(readAll(t, unetRef)), nil); err != nil {
		t.Fatal(err)
	}
	// text encoder: fp16 variant, sharded in two.
	sub = replaceComponent(t, dir, "text_encoder", nil)
	teRef := filepath.Join(tiny, "text_encoder", "model.safetensors")
	all := half(readAll(t, teRef))
	weightMap := map[string]string{}
	for i, part := range [][]safetensors.Tensor{all[:len(all)/2], all[len(all)/2:]} {
		name := []string{"model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors"}[i]
		for _, tn := range part {
			weightMap[tn.Name] = name
		}
		if err := safetensors.Write(filepath.Join(sub, name), part, nil); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(sub, "model.safetensors.index.fp16.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	// vae: fp16 variant.
	sub = replaceComponent(t, dir, "vae", nil)
	vaeRef := filepath.Join(tiny, "vae", "diffusion_pytorch_model.safetensors")
	if err := safetensors.Write(filepath.Join(sub, "diffusion_pytorch_model.fp16.safetensors"), half(readAll(t, vaeRef)), nil); err != nil {
		t.Fatal(err)
	}

	m, err := OpenModel(dir, Options{Variant: "fp16"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	assertSameTensors(t, m.UNet.Source, unetRef, true)
	assertSameTensors(t, m.VAE.Source, vaeRef, true)
	assertSameTensors(t, m.TextEncoder.Source, teRef, true)
	if len(m.TextEncoder.Files) != 4 { // config, index, two shards
		t.Errorf("text encoder files %v", m.TextEncoder.Files)
	}
	if _, err := OpenModel(dir, Options{}); err == nil || !strings.Contains(err.Error(), "Variant") {
		t.Errorf("no variant selected: err = %v, want a hint to select the variant", err)
	}
}

func TestRefusals(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	single := goldenPath(t, singleFile)
	tok := Options{TokenizerDir: filepath.Join(tiny, "tokenizer"), Hints: tinyHints}
	tmp := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	whole, err := os.ReadFile(single)
	if err != nil {
		t.Fatal(err)
	}
	truncated := write("truncated.safetensors", whole[:len(whole)-1000])

	missingKey := ldmUNetPrefix + "input_blocks.4.0.skip_connection.weight"
	dropped := filepath.Join(tmp, "dropped.safetensors")
	rewrite(t, single, dropped, func(n string) string {
		if n == missingKey {
			return ""
		}
		return n
	})
	extraKey := ldmUNetPrefix + "label_emb.0.0.weight"
	extra := filepath.Join(tmp, "extra.safetensors")
	rewrite(t, single, extra, nil, f32Tensor(extraKey, []int{4, 4}))
	sdxl := filepath.Join(tmp, "sdxl.safetensors")
	rewrite(t, goldenPath(t, controlNetFile), sdxl, nil, f32Tensor("conditioner.embedders.0.transformer.x", []int{1}))

	// A config whose cross-attention width the weights do not have.
	badCross := func(cfg map[string]any) { cfg["cross_attention_dim"] = 64 }
	shapeDir := copyModel(t)
	sub := replaceComponent(t, shapeDir, "unet", badCross)
	if err := os.Symlink(filepath.Join(tiny, "unet", "diffusion_pytorch_model.safetensors"), filepath.Join(sub, "diffusion_pytorch_model.safetensors")); err != nil {
		t.Fatal(err)
	}
	pickleDir := copyModel(t)
	sub = replaceComponent(t, pickleDir, "vae", nil)
	if err := os.WriteFile(filepath.Join(sub, "diffusion_pytorch_model.bin"), []byte("PK"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		open  func() error
		wants []string
	}{
		{"ckpt file", func() error { _, err := OpenModel(write("model.ckpt", []byte("PK")), tok); return err }, []string{"model.ckpt", "pickle", "safetensors"}},
		{"pth ControlNet", func() error {
			_, err := OpenControlNet(write("control_sd15_canny.pth", []byte("PK")), tok)
			return err
		}, []string{"control_sd15_canny.pth", "pickle"}},
		{"pickle in folder", func() error { _, err := OpenModel(pickleDir, Options{}); return err }, []string{"diffusion_pytorch_model.bin", "pickle"}},
		{"truncated", func() error { _, err := OpenModel(truncated, tok); return err }, []string{"truncated.safetensors"}},
		{"truncated ControlNet", func() error { _, err := OpenControlNet(truncated, tok); return err }, []string{"truncated.safetensors"}},
		{"shape mismatch in folder", func() error { _, err := OpenModel(shapeDir, Options{}); return err },
			[]string{"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "shape [32 32]", "[32 64]"}},
		{"shape mismatch with config folder", func() error {
			_, err := OpenModel(single, Options{ConfigDir: shapeDir})
			return err
		}, []string{"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", "[32 64]"}},
		{"missing component", func() error { _, err := OpenModel(copyModel(t, "vae"), Options{}); return err }, []string{"missing component vae"}},
		{"not a model folder", func() error { _, err := OpenModel(tmp, Options{}); return err }, []string{"model_index.json"}},
		{"missing variant", func() error { _, err := OpenModel(tiny, Options{Variant: "fp16"}); return err }, []string{"diffusion_pytorch_model.fp16.safetensors", "fp16"}},
		{"missing tensor", func() error { _, err := OpenModel(dropped, tok); return err }, []string{"dropped.safetensors", missingKey, "missing"}},
		{"unexpected tensor", func() error { _, err := OpenModel(extra, tok); return err }, []string{"extra.safetensors", extraKey, "unexpected"}},
		{"no tokenizer", func() error { _, err := OpenModel(single, Options{Hints: tinyHints}); return err }, []string{"--tokenizer DIR"}},
		{"bad tokenizer", func() error {
			_, err := OpenModel(single, Options{Hints: tinyHints, TokenizerDir: tmp})
			return err
		}, []string{"vocab.json"}},
		{"SDXL", func() error { _, err := OpenModel(sdxl, tok); return err }, []string{"SDXL"}},
		{"ControlNet as model", func() error { _, err := OpenModel(goldenPath(t, controlNetFile), tok); return err }, []string{"ControlNet"}},
		{"model as ControlNet", func() error { _, err := OpenControlNet(single, tok); return err }, []string{"not a ControlNet"}},
		{"UNet folder as ControlNet", func() error {
			_, err := OpenControlNet(filepath.Join(tiny, "unet"), Options{})
			return err
		}, []string{"ControlNetModel"}},
		{"diffusers file", func() error {
			_, err := OpenModel(filepath.Join(tiny, "vae", "diffusion_pytorch_model.safetensors"), tok)
			return err
		}, []string{"diffusers folder"}},
		{"bad variant", func() error { _, err := OpenModel(tiny, Options{Variant: "../x"}); return err }, []string{"variant"}},
		{"missing path", func() error { _, err := OpenModel(filepath.Join(tmp, "nope"), tok); return err }, []string{"nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.open()
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Keys that deliberately map to nothing do not make a file unreadable.
func TestSkippedKeys(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	p := filepath.Join(t.TempDir(), "with_extras.safetensors")
	pos := safetensors.Tensor{Name: ldmCLIPPrefix + "text_model.embeddings.position_ids", DType: safetensors.I64, Shape: []int{1, 77}, Data: make([]byte, 8*77)}
	rewrite(t, goldenPath(t, singleFile), p, nil, pos,
		f32Tensor("model_ema.diffusion_modelinput_blocks00weight", []int{32, 4, 3, 3}),
		f32Tensor("model_ema.num_updates", nil),
		f32Tensor("alphas_cumprod", []int{1000}),
		f32Tensor("lvlb_weights", []int{1000}))
	m, err := OpenModel(p, Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.TextEncoder.Source.Has("text_model.embeddings.position_ids") {
		t.Error("position_ids served as a weight")
	}
}

// SD2's OpenCLIP text tower: the fused in_proj is split into q, k, v and
// the last block (SD2 reads the penultimate layer) is skipped.
func TestOpenCLIPTextEncoder(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	teRef := filepath.Join(tiny, "text_encoder", "model.safetensors")
	ref := map[string]safetensors.Tensor{}
	for _, tn := range readAll(t, teRef) {
		ref[tn.Name] = tn
	}
	cfg, err := clip.LoadConfig(filepath.Join(tiny, "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	p := ldmOpenCLIPPrefix
	put := func(name, from string) safetensors.Tensor {
		r := ref[from]
		return safetensors.Tensor{Name: p + name, DType: r.DType, Shape: r.Shape, Data: r.Data}
	}
	tensors := []safetensors.Tensor{
		put("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
		put("positional_embedding", "text_model.embeddings.position_embedding.weight"),
		put("ln_final.weight", "text_model.final_layer_norm.weight"),
		put("ln_final.bias", "text_model.final_layer_norm.bias"),
		f32Tensor(p+"logit_scale", nil),
		f32Tensor(p+"text_projection", []int{32, 32}),
	}
	// One block more than the config: the layer SD2 never runs.
	for i := 0; i <= cfg.NumHiddenLayers; i++ {
		src := i
		if i == cfg.NumHiddenLayers {
			src = 0
		}
		hf := "text_model.encoder.layers." + strconv.Itoa(src) + "."
		oc := "transformer.resblocks." + strconv.Itoa(i) + "."
		for from, to := range map[string]string{"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"} {
			tensors = append(tensors, put(oc+to+".weight", hf+from+".weight"), put(oc+to+".bias", hf+from+".bias"))
		}
		for _, leaf := range []string{"weight", "bias"} {
			var data []byte
			shape := slices.Clone(ref[hf+"self_attn.q_proj."+leaf].Shape)
			for _, x := range []string{"q", "k", "v"} {
				data = append(data, ref[hf+"self_attn."+x+"_proj."+leaf].Data...)
			}
			shape[0] *= 3
			tensors = append(tensors, safetensors.Tensor{Name: p + oc + "attn.in_proj_" + leaf, DType: safetensors.F32, Shape: shape, Data: data})
		}
	}
	file := filepath.Join(t.TempDir(), "sd2_style.safetensors")
	rewrite(t, goldenPath(t, singleFile), file, func(n string) string {
		if strings.HasPrefix(n, ldmCLIPPrefix) {
			return ""
		}
		return n
	}, tensors...)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"inferred", Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")}},
		{"config folder", Options{ConfigDir: tiny}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := OpenModel(file, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			assertSameTensors(t, m.TextEncoder.Source, teRef, false)
			got := m.TextEncoderConfig
			if got.NumHiddenLayers != cfg.NumHiddenLayers {
				t.Errorf("layers %d, want %d", got.NumHiddenLayers, cfg.NumHiddenLayers)
			}
			if tc.name == "inferred" && got.HiddenAct != clip.ActGELU {
				t.Errorf("hidden_act %q, want OpenCLIP's gelu", got.HiddenAct)
			}
		})
	}
}

// withVariant follows diffusers' _add_variant.
func TestWithVariant(t *testing.T) {
	for _, tc := range []struct{ in, variant, want string }{
		{"diffusion_pytorch_model.safetensors", "", "diffusion_pytorch_model.safetensors"},
		{"diffusion_pytorch_model.safetensors", "fp16", "diffusion_pytorch_model.fp16.safetensors"},
		{"model.safetensors.index.json", "fp16", "model.safetensors.index.fp16.json"},
	} {
		if got := withVariant(tc.in, tc.variant); got != tc.want {
			t.Errorf("withVariant(%q, %q) = %q, want %q", tc.in, tc.variant, got, tc.want)
		}
	}
}

func TestParseShardIndex(t *testing.T) {
	for _, tc := range []struct {
		json   string
		shards []string
		err    string
	}{
		{`{"metadata": {}, "weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-1.safetensors"}}`, []string{"m-1.safetensors", "m-2.safetensors"}, ""},
		{`{"weight_map": {}}`, nil, "empty"},
		{`{"weight_map": {"a": "../x.safetensors"}}`, nil, "file name"},
		{`{"weight_map": {"a": "/etc/x.safetensors"}}`, nil, "file name"},
		{`{"weight_map": {"a": "x.bin"}}`, nil, "file name"},
		{`{"weight_map": {"a": "x.safetensors"}} {}`, nil, "after"},
		{`[1]`, nil, "JSON"},
	} {
		_, shards, err := parseShardIndex([]byte(tc.json))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.json, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(shards, tc.shards) {
			t.Errorf("%s: shards %v, err %v", tc.json, shards, err)
		}
	}
}
