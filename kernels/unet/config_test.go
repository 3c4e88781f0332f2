package unet

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
)

func TestParseConfigSD15(t *testing.T) {
	cfg, err := LoadConfig(golden.Path(t, "..", "sd15-configs", "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.AttentionHeads, []int{8, 8, 8, 8}) || cfg.CrossAttentionDim != 768 ||
		cfg.NormNumGroups != 32 || cfg.UseLinearProjection || !cfg.FlipSinToCos || cfg.NumSkips() != 12 ||
		!slices.Equal(cfg.LayersPerBlock, []int{2, 2, 2, 2}) || cfg.TimeEmbeddingDim != 1280 {
		t.Errorf("SD1.5 config parsed as %+v", cfg)
	}
}

// sd2Config is an SD2.x-style UNet: per-block head counts given as
// attention_head_dim, linear projections, 1024-wide text embeddings.
const sd2Config = `{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0",
  "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
  "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
  "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4,
  "sample_size": 96, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": true, "use_linear_projection": true
}`

func TestParseConfigSD2(t *testing.T) {
	cfg, err := ParseConfig([]byte(sd2Config))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.AttentionHeads, []int{5, 10, 20, 20}) || !cfg.UseLinearProjection || cfg.CrossAttentionDim != 1024 || !cfg.UpcastAttention {
		t.Errorf("SD2 config parsed as %+v", cfg)
	}
}

func TestParseConfigRefusals(t *testing.T) {
	base := map[string]any{}
	if err := json.Unmarshal([]byte(sd2Config), &base); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key   string
		value any
		want  string
	}{
		{"addition_embed_type", "text_time", "addition_embed_type"},
		{"class_embed_type", "timestep", "class_embed_type"},
		{"down_block_types", []string{"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}, "down_block_types[1]"},
		{"attention_head_dim", []int{5, 10}, "attention_head_dim"},
		{"act_fn", "mish", "act_fn"},
		{"only_cross_attention", true, "only_cross_attention"},
		{"resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"},
		{"time_cond_proj_dim", 256, "time_cond_proj_dim"},
		{"some_new_feature", 3, "some_new_feature"},
		{"norm_num_groups", 48, "norm_num_groups"},
		{"block_out_channels", []int{320, 640}, "block_out_channels"},
		{"transformer_layers_per_block", "x", "transformer_layers_per_block"},
	}
	for _, c := range cases {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		m[c.key] = c.value
		data, _ := json.Marshal(m)
		_, err := ParseConfig(data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%v: error %v, want one naming %q", c.key, c.value, err, c.want)
		}
	}
	if _, err := ParseConfig([]byte(`{"block_out_channels": [32,`)); err == nil {
		t.Error("truncated JSON accepted")
	}
	// A switched-off unknown feature is harmless and must load.
	m := map[string]any{}
	_ = json.Unmarshal([]byte(sd2Config), &m)
	m["brand_new_option"] = nil
	data, _ := json.Marshal(m)
	if _, err := ParseConfig(data); err != nil {
		t.Errorf("null unknown field refused: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sd2Config))
	f.Add([]byte(`{"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 8, "cross_attention_dim": 32, "attention_head_dim": 8}`))
	f.Add([]byte(`{"layers_per_block": [1, 2], "attention_head_dim": [1, 2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		// An accepted config must describe a buildable architecture.
		if len(cfg.LayersPerBlock) != len(cfg.DownBlockTypes) || len(cfg.AttentionHeads) != len(cfg.BlockOutChannels) {
			t.Fatalf("inconsistent config accepted: %+v", cfg)
		}
		_ = cfg.WeightShapes(true)
		if cfg.UpBlockTypes != nil {
			_ = cfg.WeightShapes(false)
		}
	})
}

// heldOutConfig differs from the golden tiny model in every dimension the
// issue names: three blocks, per-block heads and layers, linear
// projections, other group counts, two transformer layers.
const heldOutConfig = `{
  "attention_head_dim": [2, 4, 2], "block_out_channels": [16, 32, 48],
  "cross_attention_dim": 24, "norm_num_groups": 4, "layers_per_block": [1, 2, 1],
  "transformer_layers_per_block": [2, 1, 1], "use_linear_projection": true,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "conditioning_embedding_out_channels": [8, 16], "in_channels": 4, "out_channels": 4
}`

// convProjection serves a linear-projection checkpoint as the 1×1-conv
// checkpoint an SD1-style config would have.
type convProjection struct{ nn.RandomSource }

func (c convProjection) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	dt, shape, data, err := c.RandomSource.Tensor(name)
	if err == nil && len(shape) == 2 && (strings.HasSuffix(name, "proj_in.weight") || strings.HasSuffix(name, "proj_out.weight")) {
		shape = []int{shape[0], shape[1], 1, 1}
	}
	return dt, shape, data, err
}

// TestHeldOutStyleConfig builds a UNet and ControlNet of another config
// with random weights and checks that (1) the step runs and is finite,
// (2) the linear-projection and conv-projection forms of the same weights
// give the same prediction, and (3) the Go (im2col) and XLA (plain
// convolution) lowerings give the same prediction on one backend.
func TestHeldOutStyleConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(heldOutConfig))
	if err != nil {
		t.Fatal(err)
	}
	backend, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := NewUNet(cfg)
	cn, _ := NewControlNet(cfg)
	usrc := nn.RandomSource{Shapes: cfg.WeightShapes(false), Seed: 7}
	csrc := nn.RandomSource{Shapes: cfg.WeightShapes(true), Seed: 8}
	sh := StepShape{Batch: 2, LatentHeight: 8, LatentWidth: 12, SeqLen: 5, CondScale: 2, NumControlNet: 1}
	inputs := stepInputs(u, cn, sh)

	run := func(name string, u *UNet, cn *ControlNet, uw, cw *nn.Weights) []float32 {
		t.Helper()
		p, err := CompileStep(name, u, uw, []*ControlNet{cn}, []*nn.Weights{cw}, sh)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out, err := p.Run(inputs...)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := out[0].Shape(), shapes.Make(dtypes.Float32, 2, 4, 8, 12); !got.Equal(want) {
			t.Fatalf("%s: output %s, want %s", name, got, want)
		}
		return tensors.MustCopyFlatData[float32](out[0])
	}
	ref := run("linear", u, cn, nn.NewWeights(backend, usrc, nn.Widen), nn.NewWeights(backend, csrc, nn.Widen))
	var norm float64
	for _, v := range ref {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite prediction")
		}
		norm += float64(v) * float64(v)
	}
	if norm == 0 {
		t.Fatal("all-zero prediction")
	}

	convCfg := cfg
	convCfg.UseLinearProjection = false
	cu, _ := NewUNet(convCfg)
	ccn, _ := NewControlNet(convCfg)
	conv := run("conv-projection", cu, ccn,
		nn.NewWeights(backend, convProjection{usrc}, nn.Widen), nn.NewWeights(backend, convProjection{csrc}, nn.Widen))
	golden.AssertClose(t, "conv vs linear projection", conv, ref, 1e-6)

	xla := run("xla-lowering", u, cn,
		nn.NewWeights(backend, usrc, nn.Widen).WithLowering(nn.LowerXLA), nn.NewWeights(backend, csrc, nn.Widen).WithLowering(nn.LowerXLA))
	golden.AssertClose(t, "XLA vs Go lowering", xla, ref, 1e-5)

	// A conv-projection config must refuse linear weights (SD1/SD2 mix-up).
	if _, err := CompileStep("mismatch", cu, nn.NewWeights(backend, usrc, nn.Widen), []*ControlNet{ccn},
		[]*nn.Weights{nn.NewWeights(backend, csrc, nn.Widen)}, sh); err == nil || !strings.Contains(err.Error(), "use_linear_projection") {
		t.Errorf("projection mismatch: error %v", err)
	}
}

// stepInputs makes deterministic non-trivial inputs for a step program.
func stepInputs(u *UNet, cn *ControlNet, sh StepShape) []*tensors.Tensor {
	var out []*tensors.Tensor
	for i, s := range u.StepInputs(sh, []*ControlNet{cn}) {
		t := tensors.FromShape(s)
		tensors.MustMutableFlatData[float32](t, func(flat []float32) {
			for j := range flat {
				flat[j] = float32(math.Sin(float64(j*(i+3)) * 0.37))
			}
			if i == 1 { // timestep
				flat[0] = 421
			}
			if s.Rank() == 2 && i > 2 { // ControlNet scales
				for j := range flat {
					flat[j] = 0.8
				}
			}
		})
		out = append(out, t)
	}
	return out
}
