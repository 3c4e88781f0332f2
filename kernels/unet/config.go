// Package unet builds the denoising networks of Stable Diffusion 1.x/2.x as
// GoMLX graphs: UNet2DConditionModel (noise prediction, taking ControlNet
// residuals) and ControlNetModel (those residuals from a control image).
// Both are built from their diffusers config.json and bind weights by their
// diffusers names; they share the encoder blocks, as in diffusers.
//
// In the data flow they are the inside of the scheduler loop: latents, the
// timestep and the CLIP prompt embeddings go in, a noise prediction comes out.
package unet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
)

// Config mirrors the UNet2DConditionModel config.json fields that SD1.x/2.x
// use. Fields given as int-or-list in diffusers are resolved to one value
// per down block.
type Config struct {
	InChannels        int
	OutChannels       int
	DownBlockTypes    []string
	UpBlockTypes      []string
	MidBlockType      string
	BlockOutChannels  []int
	LayersPerBlock    []int // per down block
	DownsamplePadding int
	MidBlockScale     float64
	ActFn             string
	NormNumGroups     int
	NormEps           float64
	CrossAttentionDim int
	// AttentionHeads is the head count per down block. diffusers'
	// attention_head_dim holds the head COUNT for SD models (a historical
	// misnomer); num_attention_heads, when set, takes precedence.
	AttentionHeads []int
	// TransformerLayers is transformer_layers_per_block per down block.
	TransformerLayers   []int
	UseLinearProjection bool
	UpcastAttention     bool
	FlipSinToCos        bool
	FreqShift           float64
	CenterInputSample   bool
	ConvInKernel        int
	ConvOutKernel       int
	TimeEmbeddingDim    int // 4 × block_out_channels[0] unless set
	ResnetOutScale      float64

	// ControlNet-only fields.
	ConditioningChannels             int
	ConditioningEmbeddingOutChannels []int
	ChannelOrderBGR                  bool
	GlobalPoolConditions             bool
}

// rawConfig is the JSON as diffusers writes it.
type rawConfig struct {
	InChannels                   *int            `json:"in_channels"`
	OutChannels                  *int            `json:"out_channels"`
	DownBlockTypes               []string        `json:"down_block_types"`
	UpBlockTypes                 []string        `json:"up_block_types"`
	MidBlockType                 *string         `json:"mid_block_type"`
	BlockOutChannels             []int           `json:"block_out_channels"`
	LayersPerBlock               json.RawMessage `json:"layers_per_block"`
	DownsamplePadding            *int            `json:"downsample_padding"`
	MidBlockScaleFactor          *float64        `json:"mid_block_scale_factor"`
	ActFn                        *string         `json:"act_fn"`
	NormNumGroups                *int            `json:"norm_num_groups"`
	NormEps                      *float64        `json:"norm_eps"`
	CrossAttentionDim            json.RawMessage `json:"cross_attention_dim"`
	AttentionHeadDim             json.RawMessage `json:"attention_head_dim"`
	NumAttentionHeads            json.RawMessage `json:"num_attention_heads"`
	TransformerLayersPerBlock    json.RawMessage `json:"transformer_layers_per_block"`
	UseLinearProjection          *bool           `json:"use_linear_projection"`
	UpcastAttention              *bool           `json:"upcast_attention"`
	FlipSinToCos                 *bool           `json:"flip_sin_to_cos"`
	FreqShift                    *float64        `json:"freq_shift"`
	CenterInputSample            *bool           `json:"center_input_sample"`
	ConvInKernel                 *int            `json:"conv_in_kernel"`
	ConvOutKernel                *int            `json:"conv_out_kernel"`
	TimeEmbeddingDim             *int            `json:"time_embedding_dim"`
	ResnetOutScaleFactor         *float64        `json:"resnet_out_scale_factor"`
	ConditioningChannels         *int            `json:"conditioning_channels"`
	ConditioningEmbeddingOut     []int           `json:"conditioning_embedding_out_channels"`
	ControlnetConditioningOrder  *string         `json:"controlnet_conditioning_channel_order"`
	GlobalPoolConditions         *bool           `json:"global_pool_conditions"`
	OnlyCrossAttention           json.RawMessage `json:"only_cross_attention"`
	DualCrossAttention           *bool           `json:"dual_cross_attention"`
	ResnetTimeScaleShift         *string         `json:"resnet_time_scale_shift"`
	ResnetSkipTimeAct            *bool           `json:"resnet_skip_time_act"`
	TimeEmbeddingType            *string         `json:"time_embedding_type"`
	AttentionType                *string         `json:"attention_type"`
	ReverseTransformerLayers     json.RawMessage `json:"reverse_transformer_layers_per_block"`
	MidBlockOnlyCrossAttention   *bool           `json:"mid_block_only_cross_attention"`
	AdditionEmbedType            *string         `json:"addition_embed_type"`
	ClassEmbedType               *string         `json:"class_embed_type"`
	NumClassEmbeds               *int            `json:"num_class_embeds"`
	EncoderHidDim                *int            `json:"encoder_hid_dim"`
	EncoderHidDimType            *string         `json:"encoder_hid_dim_type"`
	TimeCondProjDim              *int            `json:"time_cond_proj_dim"`
	TimeEmbeddingActFn           *string         `json:"time_embedding_act_fn"`
	TimestepPostAct              *string         `json:"timestep_post_act"`
	CrossAttentionNorm           *string         `json:"cross_attention_norm"`
	ProjectionClassEmbeddingsDim *int            `json:"projection_class_embeddings_input_dim"`
	AdditionTimeEmbedDim         *int            `json:"addition_time_embed_dim"`
	ClassEmbeddingsConcat        *bool           `json:"class_embeddings_concat"`
}

// ignoredKeys carry no architecture (bookkeeping, training-only or
// resolution hints); they are accepted whatever their value.
var ignoredKeys = map[string]bool{
	"sample_size": true, "dropout": true, "addition_embed_type_num_heads": true,
}

// LoadConfig reads a UNet2DConditionModel or ControlNetModel config.json.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("unet config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("unet config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes a config.json and checks every field is one we build.
func ParseConfig(data []byte) (Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if err := checkUnknownKeys(data); err != nil {
		return Config{}, err
	}
	c := Config{
		InChannels:        intOr(raw.InChannels, 4),
		OutChannels:       intOr(raw.OutChannels, 4),
		DownBlockTypes:    raw.DownBlockTypes,
		UpBlockTypes:      raw.UpBlockTypes,
		BlockOutChannels:  raw.BlockOutChannels,
		DownsamplePadding: intOr(raw.DownsamplePadding, 1),
		MidBlockScale:     floatOr(raw.MidBlockScaleFactor, 1),
		ActFn:             strOr(raw.ActFn, "silu"),
		NormNumGroups:     intOr(raw.NormNumGroups, 32),
		NormEps:           floatOr(raw.NormEps, 1e-5),
		UseLinearProjection: raw.UseLinearProjection != nil &&
			*raw.UseLinearProjection,
		UpcastAttention:      raw.UpcastAttention != nil && *raw.UpcastAttention,
		FlipSinToCos:         raw.FlipSinToCos == nil || *raw.FlipSinToCos,
		FreqShift:            floatOr(raw.FreqShift, 0),
		CenterInputSample:    raw.CenterInputSample != nil && *raw.CenterInputSample,
		ConvInKernel:         intOr(raw.ConvInKernel, 3),
		ConvOutKernel:        intOr(raw.ConvOutKernel, 3),
		ResnetOutScale:       floatOr(raw.ResnetOutScaleFactor, 1),
		ConditioningChannels: intOr(raw.ConditioningChannels, 3),
		GlobalPoolConditions: raw.GlobalPoolConditions != nil && *raw.GlobalPoolConditions,
	}
	if len(c.BlockOutChannels) == 0 {
		c.BlockOutChannels = []int{320, 640, 1280, 1280}
	}
	if len(c.DownBlockTypes) == 0 {
		c.DownBlockTypes = []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}
	}
	n := len(c.DownBlockTypes)
	if len(c.BlockOutChannels) != n {
		return Config{}, fmt.Errorf("block_out_channels has %d entries but down_block_types has %d", len(c.BlockOutChannels), n)
	}
	var err error
	if c.LayersPerBlock, err = intOrList(raw.LayersPerBlock, "layers_per_block", n, 2); err != nil {
		return Config{}, err
	}
	if c.TransformerLayers, err = intOrList(raw.TransformerLayersPerBlock, "transformer_layers_per_block", n, 1); err != nil {
		return Config{}, err
	}
	heads := raw.NumAttentionHeads
	headsField := "num_attention_heads"
	if isNull(heads) {
		heads, headsField = raw.AttentionHeadDim, "attention_head_dim"
	}
	if c.AttentionHeads, err = intOrList(heads, headsField, n, 8); err != nil {
		return Config{}, err
	}
	cross, err := intOrList(raw.CrossAttentionDim, "cross_attention_dim", n, 1280)
	if err != nil {
		return Config{}, err
	}
	for _, d := range cross[1:] {
		if d != cross[0] {
			return Config{}, fmt.Errorf("cross_attention_dim %v: per-block values are not supported", cross)
		}
	}
	c.CrossAttentionDim = cross[0]
	c.MidBlockType = "UNetMidBlock2DCrossAttn"
	if raw.MidBlockType != nil {
		c.MidBlockType = *raw.MidBlockType
	}
	c.TimeEmbeddingDim = 4 * c.BlockOutChannels[0]
	if raw.TimeEmbeddingDim != nil {
		c.TimeEmbeddingDim = *raw.TimeEmbeddingDim
	}
	if raw.ConditioningEmbeddingOut != nil {
		c.ConditioningEmbeddingOutChannels = raw.ConditioningEmbeddingOut
	} else {
		c.ConditioningEmbeddingOutChannels = []int{16, 32, 96, 256}
	}
	if raw.ControlnetConditioningOrder != nil {
		switch *raw.ControlnetConditioningOrder {
		case "rgb":
		case "bgr":
			c.ChannelOrderBGR = true
		default:
			return Config{}, fmt.Errorf("controlnet_conditioning_channel_order %q: want rgb or bgr", *raw.ControlnetConditioningOrder)
		}
	}
	if err := c.checkUnsupported(&raw); err != nil {
		return Config{}, err
	}
	return c, c.validate()
}

// checkUnsupported refuses SDXL and other non-SD1/2 features: silently
// ignoring them would build a different network than the checkpoint's.
func (c *Config) checkUnsupported(raw *rawConfig) error {
	nullStr := map[string]*string{
		"addition_embed_type": raw.AdditionEmbedType, "class_embed_type": raw.ClassEmbedType,
		"encoder_hid_dim_type": raw.EncoderHidDimType, "time_embedding_act_fn": raw.TimeEmbeddingActFn,
		"timestep_post_act": raw.TimestepPostAct, "cross_attention_norm": raw.CrossAttentionNorm,
	}
	for _, k := range sortedKeys(nullStr) {
		if v := nullStr[k]; v != nil {
			return fmt.Errorf("%s %q is not supported (SD1.x/2.x have none)", k, *v)
		}
	}
	nullInt := map[string]*int{
		"num_class_embeds": raw.NumClassEmbeds, "encoder_hid_dim": raw.EncoderHidDim,
		"time_cond_proj_dim": raw.TimeCondProjDim, "projection_class_embeddings_input_dim": raw.ProjectionClassEmbeddingsDim,
		"addition_time_embed_dim": raw.AdditionTimeEmbedDim,
	}
	for _, k := range sortedKeys(nullInt) {
		if v := nullInt[k]; v != nil {
			return fmt.Errorf("%s %d is not supported (SD1.x/2.x have none)", k, *v)
		}
	}
	falseBool := map[string]*bool{
		"dual_cross_attention": raw.DualCrossAttention, "resnet_skip_time_act": raw.ResnetSkipTimeAct,
		"mid_block_only_cross_attention": raw.MidBlockOnlyCrossAttention, "class_embeddings_concat": raw.ClassEmbeddingsConcat,
	}
	for _, k := range sortedKeys(falseBool) {
		if v := falseBool[k]; v != nil && *v {
			return fmt.Errorf("%s true is not supported", k)
		}
	}
	if !isNull(raw.OnlyCrossAttention) {
		var b bool
		var list []bool
		if json.Unmarshal(raw.OnlyCrossAttention, &b) == nil {
			list = []bool{b}
		} else if err := json.Unmarshal(raw.OnlyCrossAttention, &list); err != nil {
			return fmt.Errorf("only_cross_attention: want a bool or a list of bools")
		}
		for _, v := range list {
			if v {
				return fmt.Errorf("only_cross_attention true is not supported")
			}
		}
	}
	if !isNull(raw.ReverseTransformerLayers) {
		return fmt.Errorf("reverse_transformer_layers_per_block is not supported (SDXL refiner feature)")
	}
	wantStr := []struct {
		key  string
		v    *string
		want string
	}{
		{"resnet_time_scale_shift", raw.ResnetTimeScaleShift, "default"},
		{"time_embedding_type", raw.TimeEmbeddingType, "positional"},
		{"attention_type", raw.AttentionType, "default"},
	}
	for _, w := range wantStr {
		if w.v != nil && *w.v != w.want {
			return fmt.Errorf("%s %q is not supported (want %q)", w.key, *w.v, w.want)
		}
	}
	return nil
}

func (c *Config) validate() error {
	n := len(c.DownBlockTypes)
	for i, t := range c.DownBlockTypes {
		if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return fmt.Errorf("down_block_types[%d] %q is not supported", i, t)
		}
	}
	if c.UpBlockTypes != nil {
		if len(c.UpBlockTypes) != n {
			return fmt.Errorf("up_block_types has %d entries, down_block_types %d", len(c.UpBlockTypes), n)
		}
		for i, t := range c.UpBlockTypes {
			if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
				return fmt.Errorf("up_block_types[%d] %q is not supported", i, t)
			}
		}
	}
	if c.MidBlockType != "UNetMidBlock2DCrossAttn" {
		return fmt.Errorf("mid_block_type %q is not supported", c.MidBlockType)
	}
	switch c.ActFn {
	case "silu", "swish", "gelu":
	default:
		return fmt.Errorf("act_fn %q is not supported", c.ActFn)
	}
	if c.NormNumGroups <= 0 {
		return fmt.Errorf("norm_num_groups %d must be positive", c.NormNumGroups)
	}
	for i, ch := range c.BlockOutChannels {
		if ch <= 0 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
		if c.AttentionHeads[i] <= 0 || ch%c.AttentionHeads[i] != 0 {
			return fmt.Errorf("block_out_channels[%d] = %d does not split into %d attention heads", i, ch, c.AttentionHeads[i])
		}
		if c.LayersPerBlock[i] <= 0 || c.TransformerLayers[i] <= 0 {
			return fmt.Errorf("layers_per_block and transformer_layers_per_block must be positive (block %d)", i)
		}
	}
	if c.ConvInKernel%2 == 0 || c.ConvOutKernel%2 == 0 {
		return fmt.Errorf("conv_in_kernel %d and conv_out_kernel %d must be odd", c.ConvInKernel, c.ConvOutKernel)
	}
	if c.DownsamplePadding != 0 && c.DownsamplePadding != 1 {
		return fmt.Errorf("downsample_padding %d: want 0 or 1", c.DownsamplePadding)
	}
	if c.BlockOutChannels[0]%2 != 0 {
		return fmt.Errorf("block_out_channels[0] %d must be even for the sinusoidal timestep embedding", c.BlockOutChannels[0])
	}
	return nil
}

// checkUnknownKeys refuses a key we do not know unless it is bookkeeping
// ("_"-prefixed), listed as ignorable, or switched off (null/false): a set
// feature we do not build must not be silently dropped.
func checkUnknownKeys(data []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	known := map[string]bool{}
	var probe rawConfig
	for _, f := range jsonFieldNames(probe) {
		known[f] = true
	}
	for _, k := range sortedKeys(all) {
		if known[k] || ignoredKeys[k] || (len(k) > 0 && k[0] == '_') {
			continue
		}
		v := bytes.TrimSpace(all[k])
		if string(v) == "null" || string(v) == "false" {
			continue
		}
		return fmt.Errorf("unknown config field %q = %s: not supported", k, v)
	}
	return nil
}

func intOrList(raw json.RawMessage, field string, n, def int) ([]int, error) {
	out := make([]int, n)
	if isNull(raw) {
		for i := range out {
			out[i] = def
		}
		return out, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		for i := range out {
			out[i] = one
		}
		return out, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: want an int or a list of ints, got %s", field, raw)
	}
	if len(list) != n {
		return nil, fmt.Errorf("%s has %d entries, want one per down block (%d)", field, len(list), n)
	}
	return list, nil
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func floatOr(p *float64, def float64) float64 {
	if p == nil {
		return def
	}
	return *p
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// jsonFieldNames lists the json tags of a struct's fields.
func jsonFieldNames(v any) []string {
	t := reflect.TypeOf(v)
	names := make([]string, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag != "" {
			names = append(names, tag)
		}
	}
	return names
}
