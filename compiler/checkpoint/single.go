package checkpoint

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/scheduler"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// defaultScheduler is what diffusers' from_single_file uses for SD1.x/2.x
// when nothing says otherwise (single_file_utils' SCHEDULER_DEFAULT_CONFIG
// on a PNDMScheduler, the class SD1.5 ships with).
const defaultScheduler = `{
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null
}
`

// scheduleBuffers are the LatentDiffusion module's noise-schedule buffers
// (and loss weights) saved beside the networks: derived from the schedule,
// they are not weights of any network.
var scheduleBuffers = map[string]bool{
	"betas": true, "alphas_cumprod": true, "alphas_cumprod_prev": true,
	"sqrt_alphas_cumprod": true, "sqrt_one_minus_alphas_cumprod": true,
	"log_one_minus_alphas_cumprod": true, "sqrt_recip_alphas_cumprod": true,
	"sqrt_recipm1_alphas_cumprod": true, "posterior_variance": true,
	"posterior_log_variance_clipped": true, "posterior_mean_coef1": true,
	"posterior_mean_coef2": true, "logvar": true, "lvlb_weights": true,
}

// skippedKey reports the stored keys that deliberately map to nothing:
//   - model_ema.*: EMA copies of the UNet (diffusers also loads the
//     non-EMA weights by default; pruned files have only one set);
//   - the noise-schedule buffers (scheduleBuffers);
//   - CLIP's position_ids, a constant arange buffer;
//   - OpenCLIP's logit_scale and text_projection (CLIP's contrastive head,
//     which SD does not use) and its resblocks from textLayers on (SD2
//     reads the penultimate layer's output, so the last block never runs).
func skippedKey(key string, textLayers int) bool {
	if strings.HasPrefix(key, "model_ema.") || scheduleBuffers[key] {
		return true
	}
	switch key {
	case ldmCLIPPrefix + "text_model.embeddings.position_ids",
		ldmOpenCLIPPrefix + "logit_scale", ldmOpenCLIPPrefix + "text_projection":
		return true
	}
	if rest, ok := strings.CutPrefix(key, ldmOpenCLIPPrefix+"transformer.resblocks."); ok {
		if i, _, ok := splitIndex(rest); ok && i >= textLayers {
			return true
		}
	}
	return false
}

// configFor returns a component's config: ConfigDir/<rel> when it exists,
// otherwise infer's result.
func configFor(opts Options, rel string, infer func() (json.RawMessage, error)) (data json.RawMessage, file string, err error) {
	if opts.ConfigDir != "" {
		p := filepath.Join(opts.ConfigDir, rel)
		if exists(p) {
			b, err := readFile(p)
			return b, p, err
		}
	}
	b, err := infer()
	return b, "", err
}

// identify refuses files that are not an SD1.x/2.x single-file model with
// a message saying what they look like.
func identify(ks *keyspace) error {
	switch {
	case len(ks.withPrefix("conditioner.")) > 0:
		return fmt.Errorf("%s: an SDXL checkpoint (conditioner.* keys); controlfn builds Stable Diffusion 1.x/2.x only", ks.desc)
	case ks.has(ldmUNetPrefix + "input_blocks.0.0.weight"):
		return nil
	case ks.has("time_embed.0.weight") || ks.has(ldmControlNetPrefix+"time_embed.0.weight"):
		return fmt.Errorf("%s: a ControlNet, not a Stable Diffusion model; pass it as a ControlNet", ks.desc)
	case ks.has("encoder.conv_in.weight") || ks.has("conv_in.weight"):
		return fmt.Errorf("%s: diffusers-named weights of a single component; pass the diffusers folder that holds it and its config.json", ks.desc)
	}
	return fmt.Errorf("%s: not a Stable Diffusion single-file checkpoint (no %sinput_blocks.0.0.weight)", ks.desc, ldmUNetPrefix)
}

// unexpected reports stored keys nothing used and nothing skips.
func unexpected(ks *keyspace, used map[string]bool, skip func(string) bool, what string) error {
	probs := problems{what: ks.desc}
	for _, k := range ks.keys {
		if !used[k] && !skip(k) {
			probs.add("unexpected tensor %s: it maps to no weight of the %s", k, what)
		}
	}
	return probs.err()
}

func openSingleFileModel(st store, opts Options) (*Model, error) {
	ks := fileKeyspace(st)
	if err := identify(ks); err != nil {
		return nil, err
	}
	path := st.Path()
	m := &Model{Path: path, Layout: SingleFile}
	used := map[string]bool{}

	// UNet.
	raw, file, err := configFor(opts, filepath.Join("unet", "config.json"), func() (json.RawMessage, error) {
		return inferUNet(ks, ldmUNetPrefix, false, opts.Hints)
	})
	if err != nil {
		return nil, err
	}
	ucfg, err := parseUNetConfig(raw, file, path, false)
	if err != nil {
		return nil, err
	}
	usrc, err := bind("unet", ks, ucfg.WeightShapes(false), ruleTranslator(unetRules(&ucfg, ldmUNetPrefix, false)), used)
	if err != nil {
		return nil, err
	}
	m.UNet, m.UNetConfig = component("unet", usrc, raw, file, path), ucfg
	if file == "" {
		m.Warnings = append(m.Warnings, fmt.Sprintf("unet config inferred from the weights; norm_num_groups %d and attention heads %v are not stored in them (set hints or a config folder if they differ)", ucfg.NormNumGroups, ucfg.AttentionHeads))
	}

	// VAE.
	raw, file, err = configFor(opts, filepath.Join("vae", "config.json"), func() (json.RawMessage, error) {
		return inferVAE(ks, ldmVAEPrefix, opts.Hints)
	})
	if err != nil {
		return nil, err
	}
	vcfg, err := vae.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: vae config (%s): %w", path, configOrigin(file), err)
	}
	vsrc, err := bind("vae", ks, vcfg.WeightShapes(), ruleTranslator(vaeRules(&vcfg, ldmVAEPrefix)), used)
	if err != nil {
		return nil, err
	}
	m.VAE, m.VAEConfig = component("vae", vsrc, raw, file, path), vcfg
	if file == "" {
		m.Warnings = append(m.Warnings, fmt.Sprintf("vae config inferred from the weights; norm_num_groups %d and scaling_factor %g are SD defaults", vcfg.NormNumGroups, vcfg.ScalingFactor))
	}

	// Text encoder: SD1's transformers CLIP or SD2's OpenCLIP.
	openCLIP := ks.has(ldmOpenCLIPPrefix + "token_embedding.weight")
	if !openCLIP && !ks.has(ldmCLIPPrefix+"text_model.embeddings.token_embedding.weight") {
		return nil, fmt.Errorf("%s: no text encoder: tensor %stext_model.embeddings.token_embedding.weight (SD1) or %stoken_embedding.weight (SD2) is missing", path, ldmCLIPPrefix, ldmOpenCLIPPrefix)
	}
	raw, file, err = configFor(opts, filepath.Join("text_encoder", "config.json"), func() (json.RawMessage, error) {
		if openCLIP {
			return inferCLIP(ks, ldmOpenCLIPPrefix, true, opts.Hints)
		}
		return inferCLIP(ks, ldmCLIPPrefix, false, opts.Hints)
	})
	if err != nil {
		return nil, err
	}
	tcfg, err := clip.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: text_encoder config (%s): %w", path, configOrigin(file), err)
	}
	tr := ruleTranslator(clipRules(ldmCLIPPrefix))
	if openCLIP {
		tr = openCLIPTranslator(ldmOpenCLIPPrefix)
	}
	tsrc, err := bind("text_encoder", ks, tcfg.WeightShapes(), tr, used)
	if err != nil {
		return nil, err
	}
	m.TextEncoder, m.TextEncoderConfig = component("text_encoder", tsrc, raw, file, path), tcfg
	if file == "" {
		m.Warnings = append(m.Warnings, fmt.Sprintf("text_encoder config inferred from the weights; %d attention heads and hidden_act %s are not stored in them", tcfg.NumAttentionHeads, tcfg.HiddenAct))
	}

	skip := func(k string) bool { return skippedKey(k, tcfg.NumHiddenLayers) }
	if err := unexpected(ks, used, skip, "UNet, VAE or text encoder"); err != nil {
		return nil, err
	}

	// Tokenizer and scheduler: never in the file.
	switch {
	case opts.TokenizerDir != "":
		m.TokenizerDir = opts.TokenizerDir
	case opts.ConfigDir != "" && exists(filepath.Join(opts.ConfigDir, "tokenizer")):
		m.TokenizerDir = filepath.Join(opts.ConfigDir, "tokenizer")
	default:
		return nil, fmt.Errorf("%s: a single-file checkpoint has no tokenizer: give one with --tokenizer DIR (a folder with vocab.json and merges.txt, such as a diffusers model's tokenizer/)", path)
	}
	if err := checkTokenizer(m.TokenizerDir); err != nil {
		return nil, err
	}
	sched := []byte(defaultScheduler)
	if opts.ConfigDir != "" {
		if p := filepath.Join(opts.ConfigDir, "scheduler", "scheduler_config.json"); exists(p) {
			if sched, err = readFile(p); err != nil {
				return nil, err
			}
			m.SchedulerFile = p
		}
	}
	if _, err := scheduler.ParseConfig(sched); err != nil {
		return nil, fmt.Errorf("%s: scheduler config (%s): %w", path, configOrigin(m.SchedulerFile), err)
	}
	m.SchedulerConfig = sched
	if m.SchedulerFile == "" && ucfg.CrossAttentionDim == 1024 {
		m.Warnings = append(m.Warnings, "scheduler config: the SD default (epsilon prediction) is assumed; SD2.x 768 models predict v and need their scheduler_config.json (give a config folder)")
	}
	return m, nil
}

func configOrigin(file string) string {
	if file == "" {
		return "inferred from the weights"
	}
	return file
}

// parseUNetConfig parses a UNet or ControlNet config and checks it is the
// class the caller expects.
func parseUNetConfig(raw json.RawMessage, file, path string, controlNet bool) (unet.Config, error) {
	what, class := "unet", "UNet2DConditionModel"
	if controlNet {
		what, class = "controlnet", "ControlNetModel"
	}
	var head struct {
		ClassName string `json:"_class_name"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return unet.Config{}, fmt.Errorf("%s: %s config (%s): %w", path, what, configOrigin(file), err)
	}
	if head.ClassName != "" && head.ClassName != class {
		return unet.Config{}, fmt.Errorf("%s: %s config (%s): _class_name %q, want %q", path, what, configOrigin(file), head.ClassName, class)
	}
	cfg, err := unet.ParseConfig(raw)
	if err != nil {
		return unet.Config{}, fmt.Errorf("%s: %s config (%s): %w", path, what, configOrigin(file), err)
	}
	if !controlNet && len(cfg.UpBlockTypes) == 0 {
		return unet.Config{}, fmt.Errorf("%s: unet config (%s): no up_block_types", path, configOrigin(file))
	}
	return cfg, nil
}

func component(name string, src *Source, raw json.RawMessage, configFile string, files ...string) Component {
	c := Component{Name: name, Source: src, ConfigJSON: raw, Inferred: configFile == ""}
	if configFile != "" {
		c.Files = append(c.Files, configFile)
	}
	c.Files = append(c.Files, files...)
	return c
}

// controlNetPrefix finds a single-file ControlNet's key prefix: none (the
// fp16 .safetensors in circulation) or control_model. (the original .pth
// files and full cldm checkpoints that bundle the base model).
func controlNetPrefix(ks *keyspace) (string, error) {
	switch {
	case ks.has(ldmControlNetPrefix + "time_embed.0.weight"):
		return ldmControlNetPrefix, nil
	case ks.has("time_embed.0.weight"):
		return "", nil
	case ks.has(ldmUNetPrefix + "input_blocks.0.0.weight"):
		return "", fmt.Errorf("%s: a Stable Diffusion model, not a ControlNet", ks.desc)
	case ks.has("controlnet_cond_embedding.conv_in.weight"):
		return "", fmt.Errorf("%s: diffusers-named ControlNet weights; pass the diffusers folder that holds them and their config.json", ks.desc)
	}
	return "", fmt.Errorf("%s: not a ControlNet checkpoint (no time_embed.0.weight or %stime_embed.0.weight)", ks.desc, ldmControlNetPrefix)
}

func openSingleFileControlNet(st store, opts Options) (*ControlNet, error) {
	ks := fileKeyspace(st)
	path := st.Path()
	prefix, err := controlNetPrefix(ks)
	if err != nil {
		return nil, err
	}
	raw, file, err := configFor(opts, "config.json", func() (json.RawMessage, error) {
		return inferUNet(ks, prefix, true, opts.Hints)
	})
	if err != nil {
		return nil, err
	}
	cfg, err := parseUNetConfig(raw, file, path, true)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	src, err := bind("controlnet", ks, cfg.WeightShapes(true), ruleTranslator(unetRules(&cfg, prefix, true)), used)
	if err != nil {
		return nil, err
	}
	skip := func(k string) bool {
		if scheduleBuffers[k] || strings.HasPrefix(k, "model_ema.") {
			return true
		}
		// A full cldm checkpoint carries the SD model it was trained on;
		// the ControlNet is the control_model. part.
		if prefix != "" {
			for _, p := range []string{ldmUNetPrefix, ldmVAEPrefix, "cond_stage_model."} {
				if strings.HasPrefix(k, p) {
					return true
				}
			}
		}
		return false
	}
	if err := unexpected(ks, used, skip, "ControlNet"); err != nil {
		return nil, err
	}
	c := &ControlNet{Component: component("controlnet", src, raw, file, path), Path: path, Layout: SingleFile, Config: cfg}
	if file == "" {
		c.Warnings = append(c.Warnings, fmt.Sprintf("controlnet config inferred from the weights; norm_num_groups %d and attention heads %v are not stored in them (use the base model's: UNetHints)", cfg.NormNumGroups, cfg.AttentionHeads))
	}
	return c, nil
}
