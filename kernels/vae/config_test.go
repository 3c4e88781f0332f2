package vae

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

// sd15Config is runwayml/stable-diffusion-v1-5's vae/config.json as
// published (an older diffusers: no scaling_factor, no quant-conv flags).
const sd15Config = `{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}`

func TestParseSD15Config(t *testing.T) {
	cfg, err := ParseConfig([]byte(sd15Config))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.ClassName = "AutoencoderKL"
	want.BlockOutChannels = []int{128, 256, 512, 512}
	want.DownBlockTypes = []string{DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D}
	want.UpBlockTypes = []string{UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D}
	want.LayersPerBlock = 2
	want.SampleSize = SampleSize{512, 512}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", cfg, want)
	}
	if cfg.ScalingFactor != 0.18215 || !cfg.UseQuantConv || !cfg.UsePostQuantConv || !cfg.MidBlockAddAttention {
		t.Errorf("missing keys must take diffusers' defaults: %+v", cfg)
	}
	if f := cfg.DownscaleFactor(); f != 8 {
		t.Errorf("DownscaleFactor = %d, want 8", f)
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("{} parsed to %+v, want diffusers' defaults %+v", cfg, DefaultConfig())
	}
}

// The golden config parses, survives a round trip through JSON, and its
// fields are mutually consistent.
func TestLoadGoldenConfig(t *testing.T) {
	path := golden.Path(t, "tiny-sd15", "vae", "config.json")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.BlockOutChannels) != len(cfg.DownBlockTypes) || cfg.ScalingFactor <= 0 {
		t.Errorf("inconsistent config %+v", cfg)
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseConfig(data)
	if err != nil {
		t.Fatalf("re-parse of %s: %v", data, err)
	}
	if !reflect.DeepEqual(cfg, again) {
		t.Errorf("round trip changed the config:\n%+v\n%+v", cfg, again)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Config() hands out a copy: editing it must not change the model.
	c := m.Config()
	c.BlockOutChannels[0] = -1
	if m.Config().BlockOutChannels[0] == -1 {
		t.Error("Model.Config shares its slices with the caller")
	}
}

func TestLoadConfigErrors(t *testing.T) {
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file loaded")
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"act_fn": "tanh"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "act_fn") {
		t.Errorf("error %v should name the file and the field", err)
	}
}

func TestBookkeepingKeysTolerated(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"_class_name": "AutoencoderKL", "_diffusers_version": "0.40.0",
		"_name_or_path": "/models/vae", "_use_default_values": ["shift_factor"], "sample_size": [768, 512]}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SampleSize != (SampleSize{768, 512}) {
		t.Errorf("sample_size [768, 512] parsed as %+v", cfg.SampleSize)
	}
	for _, v := range []string{`{"use_quant_conv": false, "use_post_quant_conv": false}`,
		`{"mid_block_add_attention": false, "force_upcast": false}`,
		`{"act_fn": "swish"}`, `{"act_fn": "gelu"}`, `{"act_fn": "relu"}`, `{"act_fn": "mish"}`,
		`{"shift_factor": null, "latents_mean": null, "latents_std": null}`,
		`{"block_out_channels": [32, 64], "norm_num_groups": 16,
		  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
		  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "layers_per_block": 1}`,
	} {
		if _, err := ParseConfig([]byte(v)); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// Every refusal names the offending field.
func TestRefusedValues(t *testing.T) {
	for _, c := range []struct {
		json, field string
	}{
		{`{"_class_name": "AsymmetricAutoencoderKL"}`, "_class_name"},
		{`{"_class_name": "UNet2DConditionModel"}`, "_class_name"},
		{`{"in_channels": 0}`, "in_channels"},
		{`{"out_channels": -3}`, "out_channels"},
		{`{"latent_channels": 0}`, "latent_channels"},
		{`{"layers_per_block": 0}`, "layers_per_block"},
		{`{"norm_num_groups": 0}`, "norm_num_groups"},
		{`{"norm_num_groups": 24}`, "norm_num_groups"}, // 64 channels
		{`{"block_out_channels": []}`, "block_out_channels"},
		{`{"block_out_channels": [64, 0]}`, "block_out_channels"},
		{`{"block_out_channels": [64, 128]}`, "down_block_types"},
		{`{"down_block_types": ["DownBlock2D"]}`, "down_block_types"},
		{`{"down_block_types": ["CrossAttnDownBlock2D"]}`, "down_block_types"},
		{`{"up_block_types": ["AttnUpDecoderBlock2D"]}`, "up_block_types"},
		{`{"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}`, "up_block_types"},
		{`{"act_fn": "tanh"}`, "act_fn"},
		{`{"act_fn": "quick_gelu"}`, "act_fn"},
		{`{"sample_size": 0}`, "sample_size"},
		{`{"sample_size": [64]}`, "sample_size"},
		{`{"scaling_factor": 0}`, "scaling_factor"},
		{`{"scaling_factor": -0.18215}`, "scaling_factor"},
		{`{"shift_factor": 0.0609}`, "shift_factor"},
		{`{"latents_mean": [0.1, 0.2, 0.3, 0.4]}`, "latents_mean"},
		{`{"latents_std": [1, 1, 1, 1]}`, "latents_std"},
		{`{"norm_type": "spatial"}`, "norm_type"},
		{`{"double_z": false}`, "double_z"},
		{`{"layers_per_block": null}`, "layers_per_block"},
		{`{"scaling_factor": null}`, "scaling_factor"},
		{`{"layers_per_block": "2"}`, "layers_per_block"},
		{`{"layers_per_block": 2.5}`, "layers_per_block"},
		{`{"use_quant_conv": "yes"}`, "use_quant_conv"},
		{`{"block_out_channels": 128}`, "block_out_channels"},
	} {
		_, err := ParseConfig([]byte(c.json))
		if err == nil {
			t.Errorf("%s: accepted", c.json)
			continue
		}
		if !strings.Contains(err.Error(), `"`+c.field+`"`) {
			t.Errorf("%s: error %q does not name field %q", c.json, err, c.field)
		}
	}
}

func TestBadJSON(t *testing.T) {
	for _, s := range []string{``, `{`, `[]`, `null`, `"AutoencoderKL"`, `{"in_channels": 3,}`, `{"a": 1} trailing`} {
		if _, err := ParseConfig([]byte(s)); err == nil {
			t.Errorf("%q: accepted", s)
		}
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ActFn = "tanh"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "act_fn") {
		t.Errorf("New with act_fn tanh: %v", err)
	}
}
