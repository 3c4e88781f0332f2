package checkpoint

import (
	"fmt"
	"strings"

	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// The original (CompVis LDM / A1111) single-file layout names modules by
// their position in nn.Sequential containers; diffusers names them by role.
// The maps below follow diffusers' own converters
// (single_file_utils.convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
// convert_open_clip_checkpoint, convert_controlnet_checkpoint), generated
// forwards from a config: every diffusers weight gets one stored key.

// Key prefixes of the components inside an original single file.
const (
	ldmUNetPrefix       = "model.diffusion_model."
	ldmVAEPrefix        = "first_stage_model."
	ldmCLIPPrefix       = "cond_stage_model.transformer."
	ldmOpenCLIPPrefix   = "cond_stage_model.model."
	ldmControlNetPrefix = "control_model."
)

// rule maps a diffusers module prefix to a stored one. rename, when set,
// renames the module path inside it (e.g. a resnet's norm1 is in_layers.0);
// paths it does not list are kept.
type rule struct {
	from, to string
	rename   map[string]string
}

var (
	// ResBlock (LDM) -> ResnetBlock2D (diffusers).
	unetResnet = map[string]string{
		"norm1":         "in_layers.0",
		"conv1":         "in_layers.2",
		"time_emb_proj": "emb_layers.1",
		"norm2":         "out_layers.0",
		"conv2":         "out_layers.3",
		"conv_shortcut": "skip_connection",
	}
	vaeResnet = map[string]string{"conv_shortcut": "nin_shortcut"}
	// AttnBlock (LDM) -> Attention (diffusers): q/k/v/proj_out are 1×1
	// convolutions there, linear layers here; fit reshapes them.
	vaeAttention = map[string]string{
		"group_norm": "norm",
		"to_q":       "q",
		"to_k":       "k",
		"to_v":       "v",
		"to_out.0":   "proj_out",
	}
)

// ruleTranslator resolves a name by its longest matching rule. Every
// rule prefix ends at a dot, so the candidates are the name's dotted
// prefixes: a map lookup each, linear in the name however many rules a
// large config makes.
func ruleTranslator(rules []rule) translator {
	byFrom := make(map[string]rule, len(rules))
	for _, r := range rules {
		byFrom[r.from] = r
	}
	return func(name string) []ref {
		for i := len(name) - 1; i >= 0; i-- {
			if name[i] != '.' {
				continue
			}
			r, ok := byFrom[name[:i+1]]
			if !ok {
				continue
			}
			rest := name[i+1:]
			module, leaf := "", rest
			if j := strings.LastIndexByte(rest, '.'); j >= 0 {
				module, leaf = rest[:j], rest[j+1:]
			}
			if m, ok := r.rename[module]; ok {
				module = m
			}
			if module == "" {
				return []ref{{key: r.to + leaf}}
			}
			return []ref{{key: r.to + module + "." + leaf}}
		}
		return nil
	}
}

// unetRules lays a UNet2DConditionModel (or, with controlNet, a
// ControlNetModel) out as LDM's UNetModel: input_blocks.0 is conv_in, then
// per level one input block per resnet (resnet at .0, transformer at .1)
// and one for the downsampler (.0.op); output_blocks run over the up levels
// with one more block each, the upsampler joining the last block of a level
// after its resnet and transformer.
func unetRules(cfg *unet.Config, prefix string, controlNet bool) []rule {
	rules := []rule{
		{from: "time_embedding.linear_1.", to: "time_embed.0."},
		{from: "time_embedding.linear_2.", to: "time_embed.2."},
		{from: "conv_in.", to: "input_blocks.0.0."},
		{from: "mid_block.resnets.0.", to: "middle_block.0.", rename: unetResnet},
		{from: "mid_block.attentions.0.", to: "middle_block.1."},
		{from: "mid_block.resnets.1.", to: "middle_block.2.", rename: unetResnet},
	}
	n := len(cfg.DownBlockTypes)
	k := 1
	for i := 0; i < n; i++ {
		for j := 0; j < cfg.LayersPerBlock[i]; j++ {
			rules = append(rules,
				rule{from: fmt.Sprintf("down_blocks.%d.resnets.%d.", i, j), to: fmt.Sprintf("input_blocks.%d.0.", k), rename: unetResnet},
				rule{from: fmt.Sprintf("down_blocks.%d.attentions.%d.", i, j), to: fmt.Sprintf("input_blocks.%d.1.", k)})
			k++
		}
		if i < n-1 {
			rules = append(rules, rule{from: fmt.Sprintf("down_blocks.%d.downsamplers.0.conv.", i), to: fmt.Sprintf("input_blocks.%d.0.op.", k)})
			k++
		}
	}
	if controlNet {
		cond := len(cfg.ConditioningEmbeddingOutChannels)
		rules = append(rules,
			rule{from: "controlnet_cond_embedding.conv_in.", to: "input_hint_block.0."},
			rule{from: "controlnet_cond_embedding.conv_out.", to: fmt.Sprintf("input_hint_block.%d.", 2*(2*(cond-1)+1))},
			rule{from: "controlnet_mid_block.", to: "middle_block_out.0."})
		// The hint block is a Sequential of convs with a SiLU after every
		// one but the last, so conv ordinal c sits at index 2c.
		for b := 0; b < 2*(cond-1); b++ {
			rules = append(rules, rule{from: fmt.Sprintf("controlnet_cond_embedding.blocks.%d.", b), to: fmt.Sprintf("input_hint_block.%d.", 2*(b+1))})
		}
		for z := 0; z < cfg.NumSkips(); z++ {
			rules = append(rules, rule{from: fmt.Sprintf("controlnet_down_blocks.%d.", z), to: fmt.Sprintf("zero_convs.%d.0.", z)})
		}
	} else {
		rules = append(rules,
			rule{from: "conv_norm_out.", to: "out.0."},
			rule{from: "conv_out.", to: "out.2."})
		o := 0
		for i, typ := range cfg.UpBlockTypes {
			rev := n - 1 - i
			attn := typ == "CrossAttnUpBlock2D"
			for j := 0; j <= cfg.LayersPerBlock[rev]; j++ {
				rules = append(rules,
					rule{from: fmt.Sprintf("up_blocks.%d.resnets.%d.", i, j), to: fmt.Sprintf("output_blocks.%d.0.", o), rename: unetResnet},
					rule{from: fmt.Sprintf("up_blocks.%d.attentions.%d.", i, j), to: fmt.Sprintf("output_blocks.%d.1.", o)})
				if j == cfg.LayersPerBlock[rev] && i < n-1 {
					slot := 1
					if attn {
						slot = 2
					}
					rules = append(rules, rule{from: fmt.Sprintf("up_blocks.%d.upsamplers.0.conv.", i), to: fmt.Sprintf("output_blocks.%d.%d.conv.", o, slot)})
				}
				o++
			}
		}
	}
	for i := range rules {
		rules[i].to = prefix + rules[i].to
	}
	return rules
}

// vaeRules lays an AutoencoderKL out as LDM's AutoencoderKL: encoder.down.N
// and decoder.up.N are numbered by resolution level, so the decoder's first
// diffusers up block is the highest LDM index.
func vaeRules(cfg *vae.Config, prefix string) []rule {
	rules := []rule{
		{from: "quant_conv.", to: "quant_conv."},
		{from: "post_quant_conv.", to: "post_quant_conv."},
	}
	for _, part := range []string{"encoder", "decoder"} {
		rules = append(rules,
			rule{from: part + ".conv_in.", to: part + ".conv_in."},
			rule{from: part + ".conv_out.", to: part + ".conv_out."},
			rule{from: part + ".conv_norm_out.", to: part + ".norm_out."},
			rule{from: part + ".mid_block.resnets.0.", to: part + ".mid.block_1.", rename: vaeResnet},
			rule{from: part + ".mid_block.resnets.1.", to: part + ".mid.block_2.", rename: vaeResnet},
			rule{from: part + ".mid_block.attentions.0.", to: part + ".mid.attn_1.", rename: vaeAttention})
	}
	n := len(cfg.BlockOutChannels)
	for i := 0; i < n; i++ {
		for j := 0; j < cfg.LayersPerBlock; j++ {
			rules = append(rules, rule{from: fmt.Sprintf("encoder.down_blocks.%d.resnets.%d.", i, j), to: fmt.Sprintf("encoder.down.%d.block.%d.", i, j), rename: vaeResnet})
		}
		for j := 0; j <= cfg.LayersPerBlock; j++ {
			rules = append(rules, rule{from: fmt.Sprintf("decoder.up_blocks.%d.resnets.%d.", i, j), to: fmt.Sprintf("decoder.up.%d.block.%d.", n-1-i, j), rename: vaeResnet})
		}
		rules = append(rules,
			rule{from: fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv.", i), to: fmt.Sprintf("encoder.down.%d.downsample.conv.", i)},
			rule{from: fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv.", i), to: fmt.Sprintf("decoder.up.%d.upsample.conv.", n-1-i)})
	}
	for i := range rules {
		rules[i].to = prefix + rules[i].to
	}
	return rules
}

// clipRules: the SD1 text encoder is stored as transformers'
// CLIPTextModel under cond_stage_model.transformer., so only the prefix
// changes.
func clipRules(prefix string) []rule {
	return []rule{{from: "text_model.", to: prefix + "text_model."}}
}

// openCLIPLayer maps the inside of a transformers CLIPEncoderLayer to an
// OpenCLIP ResidualAttentionBlock.
var openCLIPLayer = map[string]string{
	"layer_norm1":        "ln_1",
	"layer_norm2":        "ln_2",
	"mlp.fc1":            "mlp.c_fc",
	"mlp.fc2":            "mlp.c_proj",
	"self_attn.out_proj": "attn.out_proj",
}

// openCLIPTranslator maps transformers CLIPTextModel names onto SD2's
// OpenCLIP text tower (FrozenOpenCLIPEmbedder, cond_stage_model.model.).
// OpenCLIP fuses the query, key and value projections into in_proj_weight
// [3·hidden, hidden] and in_proj_bias [3·hidden], in that order; each is a
// block of rows, served without a copy.
func openCLIPTranslator(prefix string) translator {
	fixed := map[string]string{
		"text_model.embeddings.token_embedding.weight":    "token_embedding.weight",
		"text_model.embeddings.position_embedding.weight": "positional_embedding",
		"text_model.final_layer_norm.weight":              "ln_final.weight",
		"text_model.final_layer_norm.bias":                "ln_final.bias",
	}
	qkv := map[string]int{"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
	return func(name string) []ref {
		if k, ok := fixed[name]; ok {
			return []ref{{key: prefix + k}}
		}
		rest, ok := strings.CutPrefix(name, "text_model.encoder.layers.")
		if !ok {
			return nil
		}
		layer, rest, ok := strings.Cut(rest, ".")
		if !ok {
			return nil
		}
		i := strings.LastIndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		module, leaf := rest[:i], rest[i+1:]
		block := prefix + "transformer.resblocks." + layer + "."
		if part, ok := qkv[module]; ok {
			return []ref{{key: block + "attn.in_proj_" + leaf, part: part, parts: 3}}
		}
		if m, ok := openCLIPLayer[module]; ok {
			return []ref{{key: block + m + "." + leaf}}
		}
		return nil
	}
}

// identity serves diffusers files as they are.
func identity(name string) []ref { return []ref{{key: name}} }

// legacyVAEAttention maps the current diffusers names of the VAE attention
// to the ones diffusers used before 0.14 (query, key, value, proj_attn),
// which SD1.x repositories still ship and diffusers converts at load.
var legacyVAEAttention = map[string]string{
	"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn.",
}

func diffusersVAE(name string) []ref {
	out := []ref{{key: name}}
	if i := strings.Index(name, "mid_block.attentions.0."); i >= 0 {
		head, rest := name[:i+len("mid_block.attentions.0.")], name[i+len("mid_block.attentions.0."):]
		for cur, old := range legacyVAEAttention {
			if r, ok := strings.CutPrefix(rest, cur); ok {
				out = append(out, ref{key: head + old + r})
			}
		}
	}
	return out
}
