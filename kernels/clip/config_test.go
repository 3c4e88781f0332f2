package clip

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Configs as shipped with the SD1.5 and SD2.x diffusers repositories
// (text_encoder/config.json), trimmed of generation bookkeeping.
const (
	sd15Config = `{
  "_name_or_path": "openai/clip-vit-large-patch14",
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
  "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
  "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77, "model_type": "clip_text_model",
  "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
  "projection_dim": 768, "torch_dtype": "float32", "transformers_version": "4.22.0.dev0",
  "vocab_size": 49408}`
	sd2Config = `{
  "_name_or_path": "hf-models/stable-diffusion-v2-768x768/text_encoder",
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
  "hidden_act": "gelu", "hidden_size": 1024, "initializer_factor": 1.0,
  "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77, "model_type": "clip_text_model",
  "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1,
  "projection_dim": 512, "torch_dtype": "float32", "transformers_version": "4.25.0.dev0",
  "vocab_size": 49408}`
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		json string
		want Config
	}{
		{"sd15", sd15Config, Config{
			VocabSize: 49408, HiddenSize: 768, IntermediateSize: 3072, NumHiddenLayers: 12,
			NumAttentionHeads: 12, MaxPositionEmbeddings: 77, HiddenAct: "quick_gelu",
			LayerNormEps: 1e-5, ProjectionDim: 768, BOSTokenID: 0, EOSTokenID: 2, PadTokenID: 1,
			ModelType: "clip_text_model",
		}},
		{"sd2", sd2Config, Config{
			VocabSize: 49408, HiddenSize: 1024, IntermediateSize: 4096, NumHiddenLayers: 23,
			NumAttentionHeads: 16, MaxPositionEmbeddings: 77, HiddenAct: "gelu",
			LayerNormEps: 1e-5, ProjectionDim: 512, BOSTokenID: 0, EOSTokenID: 2, PadTokenID: 1,
			ModelType: "clip_text_model",
		}},
		{"missing keys take CLIPTextConfig defaults", `{"hidden_size": 64, "num_attention_heads": 4}`, func() Config {
			c := DefaultConfig()
			c.HiddenSize, c.NumAttentionHeads = 64, 4
			return c
		}()},
		{"unknown keys ignored", `{"output_hidden_states": true, "id2label": {"0": "a"}, "task_specific_params": null}`, DefaultConfig()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseConfigRefuses(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
	}{
		{"bad json", `{"hidden_size": 32,`, "clip config"},
		{"not an object", `[1, 2]`, "clip config"},
		{"wrong type", `{"hidden_size": "32"}`, "hidden_size"},
		{"unknown activation", `{"hidden_act": "gelu_new"}`, "hidden_act"},
		{"empty activation", `{"hidden_act": ""}`, "hidden_act"},
		{"heads do not divide hidden", `{"hidden_size": 30, "num_attention_heads": 4}`, "num_attention_heads"},
		{"zero layers", `{"num_hidden_layers": 0}`, "num_hidden_layers"},
		{"negative vocab", `{"vocab_size": -1}`, "vocab_size"},
		{"zero intermediate", `{"intermediate_size": 0}`, "intermediate_size"},
		{"zero positions", `{"max_position_embeddings": 0}`, "max_position_embeddings"},
		{"zero eps", `{"layer_norm_eps": 0}`, "layer_norm_eps"},
		{"full CLIPModel config", `{"model_type": "clip", "text_config": {"hidden_size": 32}}`, "model_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.json))
			if err == nil {
				t.Fatalf("ParseConfig(%s) succeeded", tc.json)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not name %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "config.json")
	if err := os.WriteFile(good, []byte(sd2Config), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(good)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.HiddenAct != ActGELU || cfg.NumHiddenLayers != 23 || cfg.HeadDim() != 64 {
		t.Errorf("SD2 config read as %+v", cfg)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"hidden_act": "relu"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "hidden_act") {
		t.Errorf("LoadConfig(bad) = %v, want an error naming the file and hidden_act", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadConfig of a missing file succeeded")
	}
}
