package checkpoint

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// Hints supply what a single file's weights do not determine when no
// config is given. Zero values take the Stable Diffusion 1.x/2.x defaults
// documented on each field.
type Hints struct {
	// NormNumGroups is the UNet's (and ControlNet's) GroupNorm group count.
	// 0 means 32, as in every SD1.x/2.x model.
	NormNumGroups int
	// AttentionHeads is the UNet's head count: one value for every block,
	// or one per down block. nil means 64-wide heads when
	// cross_attention_dim is 1024 (SD2.x: [5, 10, 20, 20]) and 8 heads per
	// block otherwise (SD1.x, whose cross_attention_dim is 768).
	AttentionHeads []int
	// VAENormNumGroups is the VAE's GroupNorm group count; 0 means 32.
	VAENormNumGroups int
	// TextHeads is the text encoder's head count; 0 means 64-wide heads
	// (12 for SD1's CLIP ViT-L, 16 for SD2's OpenCLIP ViT-H).
	TextHeads int
}

// UNetHints returns the hints that make an inferred ControlNet config agree
// with a base model's UNet: a ControlNet copies its UNet's encoder, so a
// single-file ControlNet opened for a model should use that model's values.
func UNetHints(cfg unet.Config) Hints {
	return Hints{NormNumGroups: cfg.NormNumGroups, AttentionHeads: append([]int(nil), cfg.AttentionHeads...)}
}

// Bounds on what inference accepts, far above any SD model, so that a
// hostile key such as input_blocks.99999999.0 cannot make us allocate.
const (
	maxIndex  = 9999
	maxLevels = 16
	maxLayers = 64 // resnets (or transformer blocks) per level
)

// withPrefix lists the stored keys starting with prefix, in order.
func (ks *keyspace) withPrefix(prefix string) []string {
	i := sort.SearchStrings(ks.keys, prefix)
	j := i
	for j < len(ks.keys) && strings.HasPrefix(ks.keys[j], prefix) {
		j++
	}
	return ks.keys[i:j]
}

// splitIndex parses "12.rest" into 12 and "rest".
func splitIndex(s string) (int, string, bool) {
	digits, rest, ok := strings.Cut(s, ".")
	if !ok || len(digits) == 0 || len(digits) > 4 || (len(digits) > 1 && digits[0] == '0') {
		return 0, "", false
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, "", false
		}
		n = n*10 + int(c-'0')
	}
	return n, rest, true
}

// shapeOf returns the shape of a stored key that inference needs, with an
// error naming it when it is missing or of the wrong rank.
func shapeOf(ks *keyspace, key string, rank int) ([]int, error) {
	info, ok := ks.info(key)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %s is missing", ks.desc, key)
	}
	if len(info.Shape) != rank {
		return nil, fmt.Errorf("%s: tensor %s has shape %v, want rank %d", ks.desc, key, info.Shape, rank)
	}
	for _, d := range info.Shape {
		if d <= 0 {
			return nil, fmt.Errorf("%s: tensor %s has shape %v", ks.desc, key, info.Shape)
		}
	}
	return info.Shape, nil
}

// countIndexed returns 1 + the largest N of keys "<prefix>N.<...>", or 0.
func countIndexed(ks *keyspace, prefix string) (int, error) {
	n := 0
	for _, k := range ks.withPrefix(prefix) {
		i, _, ok := splitIndex(k[len(prefix):])
		if !ok {
			continue // reported as an unexpected key by the caller
		}
		if i > maxIndex {
			return 0, fmt.Errorf("%s: tensor %s: index out of range", ks.desc, k)
		}
		n = max(n, i+1)
	}
	return n, nil
}

// inputBlock is what the keys of one LDM input block say about it.
type inputBlock struct {
	resnet, downsample, attention bool
	out                           int
	transformers                  int
}

type level struct {
	out, layers, transformers int
	attention                 bool
}

// inferUNet derives a UNet2DConditionModel (or ControlNetModel) config
// from LDM-layout keys under prefix. The weights determine in/out channels,
// kernel sizes, block_out_channels, layers_per_block, block types (a level
// has attention or not), transformer depth, cross_attention_dim,
// use_linear_projection, the time embedding width and, for a ControlNet,
// the hint block; head counts and group counts come from hints.
func inferUNet(ks *keyspace, prefix string, controlNet bool, h Hints) (json.RawMessage, error) {
	convIn, err := shapeOf(ks, prefix+"input_blocks.0.0.weight", 4)
	if err != nil {
		return nil, err
	}
	c0 := convIn[0]
	temb, err := shapeOf(ks, prefix+"time_embed.0.weight", 2)
	if err != nil {
		return nil, err
	}
	blocks := map[int]*inputBlock{}
	last := 0
	for _, k := range ks.withPrefix(prefix + "input_blocks.") {
		i, rest, ok := splitIndex(k[len(prefix+"input_blocks."):])
		if !ok || i == 0 {
			continue
		}
		if i > maxIndex {
			return nil, fmt.Errorf("%s: tensor %s: index out of range", ks.desc, k)
		}
		b := blocks[i]
		if b == nil {
			b = &inputBlock{}
			blocks[i] = b
		}
		last = max(last, i)
		switch {
		case rest == "0.op.weight":
			b.downsample = true
		case rest == "0.in_layers.2.weight":
			s, err := shapeOf(ks, k, 4)
			if err != nil {
				return nil, err
			}
			b.resnet, b.out = true, s[0]
		case strings.HasPrefix(rest, "1."):
			b.attention = true
			if t, ok := strings.CutPrefix(rest, "1.transformer_blocks."); ok {
				if n, _, ok := splitIndex(t); ok {
					b.transformers = max(b.transformers, n+1)
				}
			}
		}
	}
	var levels []level
	cur := level{}
	for i := 1; i <= last; i++ {
		b := blocks[i]
		switch {
		case b == nil:
			return nil, fmt.Errorf("%s: no tensors for %sinput_blocks.%d, but input_blocks.%d exists", ks.desc, prefix, i, last)
		case b.downsample:
			if b.resnet || b.attention || cur.layers == 0 {
				return nil, fmt.Errorf("%s: %sinput_blocks.%d: a downsampler must follow a level's resnets and stand alone", ks.desc, prefix, i)
			}
			levels = append(levels, cur)
			cur = level{}
		case b.resnet:
			if cur.layers == 0 {
				cur = level{out: b.out, attention: b.attention, transformers: b.transformers}
			} else if b.attention != cur.attention {
				return nil, fmt.Errorf("%s: %sinput_blocks.%d: the level mixes blocks with and without attention, which no diffusers block type builds", ks.desc, prefix, i)
			}
			cur.layers++
			if cur.layers > maxLayers || cur.transformers > maxLayers {
				return nil, fmt.Errorf("%s: %sinput_blocks.%d: more than %d layers in a level", ks.desc, prefix, i, maxLayers)
			}
		default:
			return nil, fmt.Errorf("%s: %sinput_blocks.%d has neither a resnet (in_layers.2) nor a downsampler (op)", ks.desc, prefix, i)
		}
		if len(levels) >= maxLevels {
			return nil, fmt.Errorf("%s: more than %d UNet levels", ks.desc, maxLevels)
		}
	}
	if cur.layers == 0 {
		return nil, fmt.Errorf("%s: %sinput_blocks: the last level has no resnets", ks.desc, prefix)
	}
	levels = append(levels, cur)
	n := len(levels)

	projIn, ok := ks.info(prefix + "middle_block.1.proj_in.weight")
	if !ok {
		return nil, fmt.Errorf("%s: tensor %smiddle_block.1.proj_in.weight is missing", ks.desc, prefix)
	}
	crossKey := prefix + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"
	toK, err := shapeOf(ks, crossKey, 2)
	if err != nil {
		return nil, err
	}
	midDepth, err := countIndexed(ks, prefix+"middle_block.1.transformer_blocks.")
	if err != nil {
		return nil, err
	}
	if midDepth > maxLayers {
		return nil, fmt.Errorf("%s: %smiddle_block.1 has more than %d transformer blocks", ks.desc, prefix, maxLayers)
	}

	down := make([]string, n)
	boc := make([]int, n)
	lpb := make([]int, n)
	depth := make([]int, n)
	for i, l := range levels {
		boc[i], lpb[i], depth[i] = l.out, l.layers, midDepth
		down[i] = "DownBlock2D"
		if l.attention {
			down[i] = "CrossAttnDownBlock2D"
			depth[i] = l.transformers
		}
	}
	// diffusers gives the mid block the last level's depth.
	if depth[n-1] != midDepth {
		return nil, fmt.Errorf("%s: the last level has %d transformer layers but the middle block %d; diffusers cannot express that", ks.desc, depth[n-1], midDepth)
	}
	heads, err := unetHeads(h, boc, toK[1])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ks.desc, err)
	}
	groups := h.NormNumGroups
	if groups == 0 {
		groups = 32
	}
	cfg := map[string]any{
		"act_fn":                       "silu",
		"attention_head_dim":           intOrList(heads),
		"block_out_channels":           boc,
		"cross_attention_dim":          toK[1],
		"down_block_types":             down,
		"downsample_padding":           1,
		"flip_sin_to_cos":              true,
		"freq_shift":                   0,
		"in_channels":                  convIn[1],
		"conv_in_kernel":               convIn[2],
		"layers_per_block":             intOrList(lpb),
		"mid_block_scale_factor":       1,
		"mid_block_type":               "UNetMidBlock2DCrossAttn",
		"norm_eps":                     1e-5,
		"norm_num_groups":              groups,
		"transformer_layers_per_block": intOrList(depth),
		"upcast_attention":             false,
		"use_linear_projection":        len(projIn.Shape) == 2,
	}
	if temb[0] != 4*c0 {
		cfg["time_embedding_dim"] = temb[0]
	}
	if controlNet {
		cfg["_class_name"] = "ControlNetModel"
		if err := inferHint(ks, prefix, cfg); err != nil {
			return nil, err
		}
	} else {
		cfg["_class_name"] = "UNet2DConditionModel"
		convOut, err := shapeOf(ks, prefix+"out.2.weight", 4)
		if err != nil {
			return nil, err
		}
		cfg["out_channels"] = convOut[0]
		cfg["conv_out_kernel"] = convOut[2]
		// Output blocks: a level's first block holds a transformer at .1
		// when the up block has attention (an upsampler sits at .1 only
		// in the last block of a level without attention).
		up := make([]string, n)
		o := 0
		for i := range up {
			up[i] = "UpBlock2D"
			if ks.has(fmt.Sprintf("%soutput_blocks.%d.1.norm.weight", prefix, o)) {
				up[i] = "CrossAttnUpBlock2D"
			}
			o += lpb[n-1-i] + 1
		}
		cfg["up_block_types"] = up
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// inferHint reads the ControlNet conditioning embedding: convolutions at
// input_hint_block.0, 2, 4, ... (a SiLU between each): conv_in, then pairs
// (same width, then stride-2 to the next width), then conv_out.
func inferHint(ks *keyspace, prefix string, cfg map[string]any) error {
	var outs []int
	in := 0
	for c := 0; ; c++ {
		key := fmt.Sprintf("%sinput_hint_block.%d.weight", prefix, 2*c)
		if !ks.has(key) {
			break
		}
		s, err := shapeOf(ks, key, 4)
		if err != nil {
			return err
		}
		if c == 0 {
			in = s[1]
		}
		outs = append(outs, s[0])
		if c > 2*maxLevels {
			return fmt.Errorf("%s: more than %d hint convolutions", ks.desc, 2*maxLevels)
		}
	}
	if len(outs) < 2 || len(outs)%2 != 0 {
		return fmt.Errorf("%s: %sinput_hint_block has %d convolutions; a ControlNet conditioning embedding has an even number, at least 2", ks.desc, prefix, len(outs))
	}
	cond := []int{outs[0]}
	for b := 1; b < len(outs)-1; b += 2 {
		cond = append(cond, outs[b+1])
	}
	cfg["conditioning_channels"] = in
	cfg["conditioning_embedding_out_channels"] = cond
	cfg["controlnet_conditioning_channel_order"] = "rgb"
	cfg["global_pool_conditions"] = false
	return nil
}

// unetHeads applies the hints or SD's conventions: SD1's LDM config has
// num_heads 8, SD2's num_head_channels 64 (diffusers stores both in
// attention_head_dim, as head counts).
func unetHeads(h Hints, boc []int, crossDim int) ([]int, error) {
	n := len(boc)
	switch len(h.AttentionHeads) {
	case 0:
	case 1:
		out := make([]int, n)
		for i := range out {
			out[i] = h.AttentionHeads[0]
		}
		return out, nil
	case n:
		return append([]int(nil), h.AttentionHeads...), nil
	default:
		return nil, fmt.Errorf("hint AttentionHeads has %d values; want 1 or one per level (%d)", len(h.AttentionHeads), n)
	}
	out := make([]int, n)
	for i, ch := range boc {
		if crossDim != 1024 {
			out[i] = 8
			continue
		}
		if ch%64 != 0 {
			return nil, fmt.Errorf("block width %d is not a multiple of the SD2 head width 64: give the attention heads explicitly (a config folder or hints)", ch)
		}
		out[i] = ch / 64
	}
	return out, nil
}

// intOrList writes a per-block value as diffusers does: one int when all
// blocks agree.
func intOrList(v []int) any {
	for _, x := range v[1:] {
		if x != v[0] {
			return v
		}
	}
	return v[0]
}

// inferVAE derives an AutoencoderKL config from LDM keys under prefix.
// The weights determine channels, levels, layers_per_block, latent
// channels and the optional quant convs and mid-block attention;
// norm_num_groups comes from hints and scaling_factor is SD's 0.18215.
func inferVAE(ks *keyspace, prefix string, h Hints) (json.RawMessage, error) {
	convIn, err := shapeOf(ks, prefix+"encoder.conv_in.weight", 4)
	if err != nil {
		return nil, err
	}
	n, err := countIndexed(ks, prefix+"encoder.down.")
	if err != nil {
		return nil, err
	}
	if n == 0 || n > maxLevels {
		return nil, fmt.Errorf("%s: %sencoder.down has %d levels", ks.desc, prefix, n)
	}
	boc := make([]int, n)
	lpb := 0
	for i := range boc {
		layers, err := countIndexed(ks, fmt.Sprintf("%sencoder.down.%d.block.", prefix, i))
		if err != nil {
			return nil, err
		}
		if i == 0 {
			lpb = layers
		} else if layers != lpb {
			return nil, fmt.Errorf("%s: %sencoder.down.%d has %d resnets, level 0 has %d; AutoencoderKL has one layers_per_block", ks.desc, prefix, i, layers, lpb)
		}
		if layers == 0 || layers > maxLayers {
			return nil, fmt.Errorf("%s: %sencoder.down.%d has %d resnets", ks.desc, prefix, i, layers)
		}
		s, err := shapeOf(ks, fmt.Sprintf("%sencoder.down.%d.block.0.conv1.weight", prefix, i), 4)
		if err != nil {
			return nil, err
		}
		boc[i] = s[0]
	}
	decIn, err := shapeOf(ks, prefix+"decoder.conv_in.weight", 4)
	if err != nil {
		return nil, err
	}
	decOut, err := shapeOf(ks, prefix+"decoder.conv_out.weight", 4)
	if err != nil {
		return nil, err
	}
	groups := h.VAENormNumGroups
	if groups == 0 {
		groups = 32
	}
	types := func(t string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = t
		}
		return out
	}
	cfg := map[string]any{
		"_class_name":             "AutoencoderKL",
		"act_fn":                  "silu",
		"block_out_channels":      boc,
		"down_block_types":        types(vae.DownEncoderBlock2D),
		"up_block_types":          types(vae.UpDecoderBlock2D),
		"in_channels":             convIn[1],
		"out_channels":            decOut[0],
		"latent_channels":         decIn[1],
		"layers_per_block":        lpb,
		"norm_num_groups":         groups,
		"sample_size":             512,
		"scaling_factor":          0.18215,
		"force_upcast":            true,
		"use_quant_conv":          ks.has(prefix + "quant_conv.weight"),
		"use_post_quant_conv":     ks.has(prefix + "post_quant_conv.weight"),
		"mid_block_add_attention": ks.has(prefix + "encoder.mid.attn_1.q.weight"),
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// inferCLIP derives a CLIPTextConfig from the SD1 text encoder (transformers
// layout under prefix) or, with openCLIP, SD2's OpenCLIP tower. SD2 reads
// the penultimate layer of its 24, so its config has one layer fewer than
// the file (as diffusers' stabilityai/stable-diffusion-2 text_encoder).
func inferCLIP(ks *keyspace, prefix string, openCLIP bool, h Hints) (json.RawMessage, error) {
	tokKey, posKey, layersPrefix, fc1 := prefix+"text_model.embeddings.token_embedding.weight",
		prefix+"text_model.embeddings.position_embedding.weight", prefix+"text_model.encoder.layers.", "mlp.fc1.weight"
	act := clip.ActQuickGELU
	if openCLIP {
		tokKey, posKey, layersPrefix, fc1 = prefix+"token_embedding.weight", prefix+"positional_embedding",
			prefix+"transformer.resblocks.", "mlp.c_fc.weight"
		act = clip.ActGELU
	}
	tok, err := shapeOf(ks, tokKey, 2)
	if err != nil {
		return nil, err
	}
	pos, err := shapeOf(ks, posKey, 2)
	if err != nil {
		return nil, err
	}
	layers, err := countIndexed(ks, layersPrefix)
	if err != nil {
		return nil, err
	}
	if openCLIP {
		layers--
	}
	if layers < 1 || layers > 4*maxLayers {
		return nil, fmt.Errorf("%s: %d text encoder layers under %s", ks.desc, layers, layersPrefix)
	}
	mlp, err := shapeOf(ks, layersPrefix+"0."+fc1, 2)
	if err != nil {
		return nil, err
	}
	hidden := tok[1]
	heads := h.TextHeads
	if heads == 0 {
		if hidden%64 != 0 {
			return nil, fmt.Errorf("%s: text encoder width %d is not a multiple of the CLIP head width 64: give the head count explicitly (a config folder or hints)", ks.desc, hidden)
		}
		heads = hidden / 64
	}
	cfg := map[string]any{
		"architectures":           []string{"CLIPTextModel"},
		"model_type":              "clip_text_model",
		"vocab_size":              tok[0],
		"hidden_size":             hidden,
		"intermediate_size":       mlp[0],
		"num_hidden_layers":       layers,
		"num_attention_heads":     heads,
		"max_position_embeddings": pos[0],
		"hidden_act":              act,
		"layer_norm_eps":          1e-5,
		"projection_dim":          hidden,
		// openai/clip-vit-large-patch14's legacy ids: with eos 2 the
		// pooled token is found by argmax, as transformers does for SD.
		"bos_token_id": 0,
		"eos_token_id": 2,
		"pad_token_id": 1,
	}
	return json.MarshalIndent(cfg, "", "  ")
}
