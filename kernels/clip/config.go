package clip

import (
	"encoding/json"
	"fmt"
	"os"
)

// Activations the MLP supports, as CLIPTextConfig.hidden_act names them:
// SD1.x's OpenAI ViT-L/14 uses quick_gelu, SD2.x's OpenCLIP ViT-H exact gelu.
const (
	ActQuickGELU = "quick_gelu"
	ActGELU      = "gelu"
)

// legacyEOSTokenID is the eos_token_id that transformers treats as "config
// written before the field meant anything": the pooled position is then
// argmax(ids), which finds the EOS because it has CLIP's highest id.
const legacyEOSTokenID = 2

// Config mirrors the fields of transformers' CLIPTextConfig that the text
// encoder of SD1.x/2.x depends on. Other keys of config.json (bookkeeping
// such as _name_or_path, architectures, torch_dtype, dropout and
// initializer settings, generation defaults) do not change inference and
// are ignored.
type Config struct {
	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	// ProjectionDim sizes text_projection, which only
	// CLIPTextModelWithProjection has; kept so a config round-trips.
	ProjectionDim int `json:"projection_dim"`
	BOSTokenID    int `json:"bos_token_id"`
	EOSTokenID    int `json:"eos_token_id"`
	PadTokenID    int `json:"pad_token_id"`
	// ModelType is checked, when present, so a full CLIPModel config (with
	// a nested text_config) is refused rather than read as defaults.
	ModelType string `json:"model_type"`
}

// DefaultConfig is CLIPTextConfig's constructor defaults, which transformers
// applies to every key config.json leaves out.
func DefaultConfig() Config {
	return Config{
		VocabSize:             49408,
		HiddenSize:            512,
		IntermediateSize:      2048,
		NumHiddenLayers:       12,
		NumAttentionHeads:     8,
		MaxPositionEmbeddings: 77,
		HiddenAct:             ActQuickGELU,
		LayerNormEps:          1e-5,
		ProjectionDim:         512,
		BOSTokenID:            49406,
		EOSTokenID:            49407,
		PadTokenID:            1,
	}
}

// LoadConfig reads and validates a text_encoder/config.json.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("clip config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates the JSON of a CLIPTextConfig; missing
// keys take transformers' defaults.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("clip config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate refuses values the encoder cannot run, naming the field.
func (c Config) Validate() error {
	positive := []struct {
		field string
		v     int
	}{
		{"vocab_size", c.VocabSize},
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("clip config: %s is %d, must be positive", p.field, p.v)
		}
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("clip config: hidden_size %d is not a multiple of num_attention_heads %d",
			c.HiddenSize, c.NumAttentionHeads)
	}
	switch c.HiddenAct {
	case ActQuickGELU, ActGELU:
	default:
		return fmt.Errorf("clip config: hidden_act %q is not supported (want %q or %q)",
			c.HiddenAct, ActQuickGELU, ActGELU)
	}
	if !(c.LayerNormEps > 0) {
		return fmt.Errorf("clip config: layer_norm_eps is %g, must be positive", c.LayerNormEps)
	}
	if c.ModelType != "" && c.ModelType != "clip_text_model" {
		return fmt.Errorf("clip config: model_type %q is not a CLIP text model (want \"clip_text_model\")", c.ModelType)
	}
	return nil
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }
