// Package demomodel writes the built-in demo model: a small, deterministic,
// random-weight Stable Diffusion 1.5-architecture pipeline with a
// ControlNet, in the diffusers folder layout, with its own small CLIP BPE
// vocabulary. It is what `make demo` compiles into a bundle on a machine
// that can download nothing: the compiler and the function see exactly the
// files a real checkpoint folder would give them.
package demomodel

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// The demo architecture: SD1.5's block structure at toy widths.
const (
	unetConfig = `{
  "_class_name": "UNet2DConditionModel",
  "act_fn": "silu", "attention_head_dim": 4, "block_out_channels": [32, 64],
  "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "downsample_padding": 1,
  "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "out_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 8,
  "sample_size": 8, "use_linear_projection": false
}`
	controlNetConfig = `{
  "_class_name": "ControlNetModel",
  "act_fn": "silu", "attention_head_dim": 4, "block_out_channels": [32, 64],
  "conditioning_embedding_out_channels": [16, 32, 96, 256],
  "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 32,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1,
  "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 8, "use_linear_projection": false
}`
	vaeConfig = `{
  "_class_name": "AutoencoderKL",
  "act_fn": "silu", "block_out_channels": [32, 32, 64, 64],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
  "norm_num_groups": 32, "sample_size": 64, "scaling_factor": 0.18215
}`
	schedulerConfig = `{
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
  "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null
}`
	modelIndex = `{
  "_class_name": "StableDiffusionControlNetPipeline",
  "controlnet": ["diffusers", "ControlNetModel"], "scheduler": ["diffusers", "PNDMScheduler"],
  "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
  "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
  "safety_checker": [null, null], "feature_extractor": [null, null], "requires_safety_checker": false
}`
)

// demoWords get BPE merges so the demo tokenizer exercises real merging on
// the demo prompt, not only single bytes.
var demoWords = []string{"a", "photo", "of", "the", "red", "cube", "on", "wooden", "table", "high", "quality", "blurry", "low", "house", "sky"}

// ControlImageName is the control map written beside the model.
const ControlImageName = "control.png"

// Write creates the built-in demo model folder at dir (which must not
// exist), atomically: everything is written into a temporary folder that is
// renamed into place last.
func Write(dir string) error {
	return write(dir, builtinSpec())
}

// WriteFromConfigs writes a random-weight model of the architecture in
// configDir (a diffusers-style folder with unet/, controlnet/, vae/,
// text_encoder/ config.json and scheduler/scheduler_config.json, such as
// the full-size SD1.5 configs benchmarks use), with the tokenizer files of
// tokenizerDir, or the built-in small vocabulary when tokenizerDir is empty
// (its ids are valid for any CLIP text encoder, enough for benchmarks).
func WriteFromConfigs(dir, configDir, tokenizerDir string) error {
	sp := spec{files: map[string][]byte{}}
	if tokenizerDir == "" {
		sp.files = builtinSpec().files
	}
	for _, c := range []struct {
		dst  *string
		path string
	}{
		{&sp.unet, "unet/config.json"}, {&sp.controlNet, "controlnet/config.json"}, {&sp.vae, "vae/config.json"},
		{&sp.textEncoder, "text_encoder/config.json"}, {&sp.scheduler, "scheduler/scheduler_config.json"},
	} {
		data, err := os.ReadFile(filepath.Join(configDir, c.path))
		if err != nil {
			return fmt.Errorf("demo model: %w", err)
		}
		*c.dst = string(data)
	}
	for _, name := range []string{"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} {
		if tokenizerDir == "" {
			break
		}
		data, err := os.ReadFile(filepath.Join(tokenizerDir, name))
		if err != nil {
			return fmt.Errorf("demo model: tokenizer: %w", err)
		}
		sp.files["tokenizer/"+name] = data
	}
	return write(dir, sp)
}

// spec is what a random-weight model folder is made from.
type spec struct {
	unet, controlNet, vae, textEncoder, scheduler string
	// files are written verbatim (tokenizer files, model_index.json...).
	files map[string][]byte
}

func builtinSpec() spec {
	vocab, merges := vocabulary()
	teConfig := map[string]any{
		"architectures": []string{"CLIPTextModel"}, "model_type": "clip_text_model",
		"hidden_act": "quick_gelu", "hidden_size": 32, "intermediate_size": 64,
		"num_attention_heads": 4, "num_hidden_layers": 3, "max_position_embeddings": 77,
		"layer_norm_eps": 1e-05, "projection_dim": 32, "vocab_size": len(vocab),
		"bos_token_id": vocab[bos], "eos_token_id": vocab[eos], "pad_token_id": vocab[eos],
	}
	teJSON, _ := json.MarshalIndent(teConfig, "", "  ") // a map of plain values always marshals
	vocabJSON, _ := json.Marshal(vocab)
	return spec{
		unet: unetConfig, controlNet: controlNetConfig, vae: vaeConfig, textEncoder: string(teJSON), scheduler: schedulerConfig,
		files: map[string][]byte{
			"tokenizer/vocab.json":              vocabJSON,
			"tokenizer/merges.txt":              []byte("#version: 0.2\n" + strings.Join(merges, "\n") + "\n"),
			"tokenizer/special_tokens_map.json": []byte(`{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}`),
			"tokenizer/tokenizer_config.json":   []byte(`{"model_max_length": 77, "do_lower_case": true, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}`),
		},
	}
}

func write(dir string, sp spec) error {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("demo model: %s already exists", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	if err := writeAll(tmp, sp); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	// MkdirTemp creates 0700; the model is an ordinary readable folder.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	return nil
}

func writeAll(dir string, sp spec) error {
	ucfg, err := unet.ParseConfig([]byte(sp.unet))
	if err != nil {
		return fmt.Errorf("unet config: %w", err)
	}
	ccfg, err := unet.ParseConfig([]byte(sp.controlNet))
	if err != nil {
		return fmt.Errorf("controlnet config: %w", err)
	}
	vcfg, err := vae.ParseConfig([]byte(sp.vae))
	if err != nil {
		return fmt.Errorf("vae config: %w", err)
	}
	tcfg, err := clip.ParseConfig([]byte(sp.textEncoder))
	if err != nil {
		return fmt.Errorf("text encoder config: %w", err)
	}
	components := []struct {
		folder, weights, config string
		shapes                  map[string][]int
		seed                    uint64
	}{
		{"unet", "diffusion_pytorch_model.safetensors", sp.unet, ucfg.WeightShapes(false), 1},
		{"controlnet", "diffusion_pytorch_model.safetensors", sp.controlNet, ccfg.WeightShapes(true), 2},
		{"vae", "diffusion_pytorch_model.safetensors", sp.vae, vcfg.WeightShapes(), 3},
		{"text_encoder", "model.safetensors", sp.textEncoder, tcfg.WeightShapes(), 4},
	}
	for _, c := range components {
		sub := filepath.Join(dir, c.folder)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(sub, "config.json"), []byte(c.config+"\n"), 0o644); err != nil {
			return err
		}
		if err := writeRandomWeights(filepath.Join(sub, c.weights), c.shapes, c.seed); err != nil {
			return fmt.Errorf("%s: %w", c.folder, err)
		}
	}
	files := map[string][]byte{
		"model_index.json":                []byte(modelIndex),
		"scheduler/scheduler_config.json": []byte(sp.scheduler),
	}
	for name, data := range sp.files {
		files[name] = data
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return err
		}
	}
	return writeControlImage(filepath.Join(dir, ControlImageName), 64, 64)
}

func writeRandomWeights(path string, shapes map[string][]int, seed uint64) error {
	src := nn.RandomSource{Shapes: shapes, DType: safetensors.F32, Seed: seed}
	tensors := make([]safetensors.Tensor, 0, len(shapes))
	for name, shape := range shapes {
		// Generated as the writer reaches each tensor: a full-size model
		// never sits in memory whole.
		tensors = append(tensors, safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: shape, Load: func() ([]byte, error) {
			_, _, data, err := src.Tensor(name)
			return data, err
		}})
	}
	return safetensors.Write(path, tensors, map[string]string{"format": "pt", "generator": "controlfn demo-model"})
}

const (
	bos = "<|startoftext|>"
	eos = "<|endoftext|>"
)

// vocabulary builds a CLIP-style byte-level BPE vocabulary: the 256 byte
// symbols, the same with the end-of-word mark, merges that spell the demo
// words, then the two special tokens (last, as in CLIP's vocabulary).
func vocabulary() (map[string]int, []string) {
	symbols := byteSymbols()
	vocab := map[string]int{}
	add := func(tok string) {
		if _, ok := vocab[tok]; !ok {
			vocab[tok] = len(vocab)
		}
	}
	for _, s := range symbols {
		add(s)
	}
	for _, s := range symbols {
		add(s + "</w>")
	}
	var merges []string
	seen := map[string]bool{}
	for _, w := range demoWords {
		// Merge left to right: "p h", "ph o", "pho t", "phot o</w>".
		left := string(w[0])
		for i := 1; i < len(w); i++ {
			right := string(w[i])
			if i == len(w)-1 {
				right += "</w>"
			}
			m := left + " " + right
			if !seen[m] {
				seen[m] = true
				merges = append(merges, m)
				add(left + right)
			}
			left += right
		}
	}
	add(bos)
	add(eos)
	return vocab, merges
}

// byteSymbols is GPT-2/CLIP's reversible byte → printable-rune table, in
// CLIP's vocabulary order (printable bytes first, then the rest mapped
// above U+0100).
func byteSymbols() []string {
	var bytes []int
	for b := '!'; b <= '~'; b++ {
		bytes = append(bytes, int(b))
	}
	for b := 0xA1; b <= 0xAC; b++ {
		bytes = append(bytes, b)
	}
	for b := 0xAE; b <= 0xFF; b++ {
		bytes = append(bytes, b)
	}
	runes := make(map[int]rune, 256)
	for _, b := range bytes {
		runes[b] = rune(b)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if _, ok := runes[b]; !ok {
			bytes = append(bytes, b)
			runes[b] = rune(256 + n)
			n++
		}
	}
	out := make([]string, len(bytes))
	for i, b := range bytes {
		out[i] = string(runes[b])
	}
	return out
}

// writeControlImage draws a white-on-black edge map (a circle and a square
// outline), the kind of map a Canny ControlNet expects.
func writeControlImage(path string, w, h int) error {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.Black)
		}
	}
	white := color.RGBA{255, 255, 255, 255}
	cx, cy, r := float64(w)*0.35, float64(h)*0.4, float64(w)*0.2
	for a := 0.0; a < 2*math.Pi; a += 0.01 {
		img.Set(int(cx+r*math.Cos(a)), int(cy+r*math.Sin(a)), white)
	}
	x0, y0, x1, y1 := w*55/100, h*50/100, w*90/100, h*85/100
	for x := x0; x <= x1; x++ {
		img.Set(x, y0, white)
		img.Set(x, y1, white)
	}
	for y := y0; y <= y1; y++ {
		img.Set(x0, y, white)
		img.Set(x1, y, white)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
