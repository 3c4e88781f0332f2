package vae

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

// Block types this package builds. They are the only ones AutoencoderKL
// checkpoints of the SD1.x/2.x family use.
const (
	DownEncoderBlock2D = "DownEncoderBlock2D"
	UpDecoderBlock2D   = "UpDecoderBlock2D"
)

// Config mirrors the fields of diffusers' AutoencoderKL config.json. Missing
// keys take diffusers' constructor defaults (DefaultConfig), so a config
// written by an older diffusers (no scaling_factor, no use_quant_conv) means
// what it meant there.
type Config struct {
	// ClassName is the bookkeeping "_class_name"; when present it must be
	// AutoencoderKL.
	ClassName string `json:"_class_name,omitempty"`

	InChannels       int      `json:"in_channels"`
	OutChannels      int      `json:"out_channels"`
	DownBlockTypes   []string `json:"down_block_types"`
	UpBlockTypes     []string `json:"up_block_types"`
	BlockOutChannels []int    `json:"block_out_channels"`
	LayersPerBlock   int      `json:"layers_per_block"`
	// ActFn is the resnets' activation; the encoder's and decoder's final
	// activation is SiLU whatever this says, as in diffusers.
	ActFn          string     `json:"act_fn"`
	LatentChannels int        `json:"latent_channels"`
	NormNumGroups  int        `json:"norm_num_groups"`
	SampleSize     SampleSize `json:"sample_size"`
	// ScalingFactor maps VAE latents to the unit-variance space the UNet
	// was trained in: diffusion latents = VAE latents · ScalingFactor.
	ScalingFactor float64 `json:"scaling_factor"`
	// ShiftFactor, LatentsMean and LatentsStd belong to later model
	// families (SD3, Flux, SDXL variants); only null is supported.
	ShiftFactor *float64  `json:"shift_factor"`
	LatentsMean []float64 `json:"latents_mean"`
	LatentsStd  []float64 `json:"latents_std"`
	// ForceUpcast tells fp16 pipelines to run the VAE in float32; this
	// package computes in float32 anyway, so it is informational.
	ForceUpcast          bool `json:"force_upcast"`
	UseQuantConv         bool `json:"use_quant_conv"`
	UsePostQuantConv     bool `json:"use_post_quant_conv"`
	MidBlockAddAttention bool `json:"mid_block_add_attention"`
}

// SampleSize is config.json's sample_size: an int (square) or [height, width].
// It only sizes diffusers' tiling, so the graphs never depend on it.
type SampleSize struct {
	Height, Width int
}

// UnmarshalJSON accepts 512 or [512, 512].
func (s *SampleSize) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*s = SampleSize{n, n}
		return nil
	}
	var hw []int
	if err := json.Unmarshal(b, &hw); err != nil || len(hw) != 2 {
		return fmt.Errorf("want an integer or [height, width], got %s", b)
	}
	*s = SampleSize{hw[0], hw[1]}
	return nil
}

// MarshalJSON writes the int form for square sizes, as diffusers does.
func (s SampleSize) MarshalJSON() ([]byte, error) {
	if s.Height == s.Width {
		return json.Marshal(s.Height)
	}
	return json.Marshal([]int{s.Height, s.Width})
}

// DefaultConfig is diffusers' AutoencoderKL() with no arguments.
func DefaultConfig() Config {
	return Config{
		InChannels:           3,
		OutChannels:          3,
		DownBlockTypes:       []string{DownEncoderBlock2D},
		UpBlockTypes:         []string{UpDecoderBlock2D},
		BlockOutChannels:     []int{64},
		LayersPerBlock:       1,
		ActFn:                "silu",
		LatentChannels:       4,
		NormNumGroups:        32,
		SampleSize:           SampleSize{32, 32},
		ScalingFactor:        0.18215,
		ForceUpcast:          true,
		UseQuantConv:         true,
		UsePostQuantConv:     true,
		MidBlockAddAttention: true,
	}
}

// isNullable reports the keys whose null is meaningful (the feature is off).
func isNullable(key string) bool {
	switch key {
	case "shift_factor", "latents_mean", "latents_std":
		return true
	}
	return false
}

// fields maps every config.json key this package reads to its destination,
// so the list of known keys and the decoding cannot drift apart.
func (c *Config) fields() map[string]any {
	return map[string]any{
		"_class_name":             &c.ClassName,
		"in_channels":             &c.InChannels,
		"out_channels":            &c.OutChannels,
		"down_block_types":        &c.DownBlockTypes,
		"up_block_types":          &c.UpBlockTypes,
		"block_out_channels":      &c.BlockOutChannels,
		"layers_per_block":        &c.LayersPerBlock,
		"act_fn":                  &c.ActFn,
		"latent_channels":         &c.LatentChannels,
		"norm_num_groups":         &c.NormNumGroups,
		"sample_size":             &c.SampleSize,
		"scaling_factor":          &c.ScalingFactor,
		"shift_factor":            &c.ShiftFactor,
		"latents_mean":            &c.LatentsMean,
		"latents_std":             &c.LatentsStd,
		"force_upcast":            &c.ForceUpcast,
		"use_quant_conv":          &c.UseQuantConv,
		"use_post_quant_conv":     &c.UsePostQuantConv,
		"mid_block_add_attention": &c.MidBlockAddAttention,
	}
}

// LoadConfig reads and validates a vae/config.json.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("vae config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates an AutoencoderKL config. Keys starting
// with "_" are bookkeeping (diffusers version, name or path) and ignored,
// except _class_name. Any other unknown key is refused: it would be a
// feature of a newer diffusers this graph does not build, and ignoring it
// would compute a different model silently.
func ParseConfig(data []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("vae config: invalid JSON: %w", err)
	}
	if raw == nil {
		return Config{}, fmt.Errorf("vae config: want a JSON object, got null")
	}
	cfg := DefaultConfig()
	fields := cfg.fields()
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names) // the first bad key reported is deterministic
	for _, k := range names {
		v := raw[k]
		if strings.HasPrefix(k, "_") {
			continue
		}
		if _, ok := fields[k]; !ok {
			return Config{}, fmt.Errorf("vae config: unknown field %q (not an AutoencoderKL option this package builds)", k)
		}
		if !isNullable(k) && bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return Config{}, fmt.Errorf("vae config: field %q: null is not allowed", k)
		}
	}
	// Decode key by key so an error names the field.
	for _, k := range names {
		dst, ok := fields[k]
		if !ok {
			continue // other bookkeeping key
		}
		if err := json.Unmarshal(raw[k], dst); err != nil {
			return Config{}, fmt.Errorf("vae config: field %q: %w", k, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// supportedActivations are diffusers' get_activation names.
const supportedActivations = "silu, swish, gelu, relu, mish"

// Validate refuses what the graphs cannot build, naming the field.
func (c Config) Validate() error {
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("vae config: field %q: %s", field, fmt.Sprintf(format, args...))
	}
	if c.ClassName != "" && c.ClassName != "AutoencoderKL" {
		return bad("_class_name", "%q is not AutoencoderKL", c.ClassName)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"in_channels", c.InChannels},
		{"out_channels", c.OutChannels},
		{"latent_channels", c.LatentChannels},
		{"layers_per_block", c.LayersPerBlock},
		{"norm_num_groups", c.NormNumGroups},
	} {
		if f.v < 1 {
			return bad(f.name, "must be at least 1, got %d", f.v)
		}
	}
	n := len(c.BlockOutChannels)
	if n == 0 {
		return bad("block_out_channels", "must not be empty")
	}
	for i, ch := range c.BlockOutChannels {
		if ch < 1 {
			return bad("block_out_channels", "entry %d is %d, must be at least 1", i, ch)
		}
		// Every GroupNorm of the model is over some block's channel count.
		if ch%c.NormNumGroups != 0 {
			return bad("norm_num_groups", "%d groups do not divide block_out_channels[%d] = %d", c.NormNumGroups, i, ch)
		}
	}
	if len(c.DownBlockTypes) != n {
		return bad("down_block_types", "has %d entries, block_out_channels has %d", len(c.DownBlockTypes), n)
	}
	for i, t := range c.DownBlockTypes {
		if t != DownEncoderBlock2D {
			return bad("down_block_types", "entry %d is %q, only %s is supported", i, t, DownEncoderBlock2D)
		}
	}
	if len(c.UpBlockTypes) != n {
		return bad("up_block_types", "has %d entries, block_out_channels has %d", len(c.UpBlockTypes), n)
	}
	for i, t := range c.UpBlockTypes {
		if t != UpDecoderBlock2D {
			return bad("up_block_types", "entry %d is %q, only %s is supported", i, t, UpDecoderBlock2D)
		}
	}
	if !isSupportedActivation(c.ActFn) {
		return bad("act_fn", "%q is not supported (supported: %s)", c.ActFn, supportedActivations)
	}
	if c.SampleSize.Height < 1 || c.SampleSize.Width < 1 {
		return bad("sample_size", "must be positive, got %dx%d", c.SampleSize.Height, c.SampleSize.Width)
	}
	if !(c.ScalingFactor > 0) || math.IsInf(c.ScalingFactor, 0) {
		return bad("scaling_factor", "must be a positive finite number, got %v", c.ScalingFactor)
	}
	if c.ShiftFactor != nil {
		return bad("shift_factor", "only null is supported, got %v", *c.ShiftFactor)
	}
	if c.LatentsMean != nil {
		return bad("latents_mean", "only null is supported")
	}
	if c.LatentsStd != nil {
		return bad("latents_std", "only null is supported")
	}
	return nil
}

func isSupportedActivation(name string) bool {
	switch name {
	case "silu", "swish", "gelu", "relu", "mish":
		return true
	}
	return false
}

// DownscaleFactor is how many image pixels one latent pixel spans per side
// (diffusers' vae_scale_factor): one halving per block but the last.
func (c Config) DownscaleFactor() int { return 1 << (len(c.BlockOutChannels) - 1) }
