package lora

import "strings"

// Component is the model a LoRA module patches. A LoRA file usually holds
// modules for both; the compiler merges each component separately.
type Component string

// The components SD1.x/2.x LoRAs patch. ControlNets and the VAE are never
// LoRA targets.
const (
	UNet        Component = "unet"
	TextEncoder Component = "text_encoder"
)

// Format is the naming convention a LoRA file is written in.
type Format string

// The formats Load understands.
const (
	// Kohya is kohya-ss sd-scripts' and A1111's: lora_unet_<path with '.'
	// flattened to '_'>.lora_down.weight / .lora_up.weight / .alpha.
	Kohya Format = "kohya"
	// PEFT is diffusers' current format: unet.<path>.lora_A.weight /
	// .lora_B.weight, alpha folded into lora_B.
	PEFT Format = "peft"
	// Diffusers is diffusers' format before PEFT: <path>.lora.down.weight,
	// attention processors' to_q_lora.down.weight, the text encoder's
	// lora_linear_layer.
	Diffusers Format = "diffusers"
	// Mixed is reported for a file whose modules use more than one format.
	Mixed Format = "mixed"
)

// role is what a LoRA tensor is to its module.
type role uint8

const (
	roleDown  role = iota + 1 // [rank, in] or [rank, in, kh, kw]
	roleUp                    // [out, rank] or [out, rank, 1, 1]
	roleAlpha                 // one element
)

func (r role) String() string {
	switch r {
	case roleDown:
		return "down"
	case roleUp:
		return "up"
	case roleAlpha:
		return "alpha"
	}
	return "unknown"
}

const (
	whySDXL = "an SDXL LoRA (second text encoder): only SD1.x/2.x models are built"
	whyLDM  = "module names in the original LDM (CompVis) layout, which kohya uses for SDXL; only diffusers-named SD1.x/2.x LoRAs are supported"
)

// Every naming convention lives in the three tables below, as in
// stable-diffusion.cpp's lora.hpp: the prefix of a key names the component,
// its suffix names the tensor's role, and what lies between is the module
// path in the component's diffusers naming (flattened for kohya).

// prefixes says which component a key belongs to and how its module path is
// written.
var prefixes = []struct {
	prefix    string
	component Component
	// flat: kohya writes the module path with '.' replaced by '_', so it is
	// resolved against the model's real weight names (see resolver).
	flat bool
	// keep: the prefix is the first part of the module path itself; the
	// earliest diffusers files saved the UNet's attention processors with
	// no component prefix.
	keep bool
	// refuse is why keys with this prefix are refused, if they are.
	refuse string
}{
	{prefix: "lora_unet_", component: UNet, flat: true},
	{prefix: "lora_te_", component: TextEncoder, flat: true},
	{prefix: "lora_te1_", refuse: whySDXL},
	{prefix: "lora_te2_", refuse: whySDXL},
	{prefix: "unet.", component: UNet},
	{prefix: "text_encoder.", component: TextEncoder},
	{prefix: "text_encoder_2.", refuse: whySDXL},
	{prefix: "down_blocks.", component: UNet, keep: true},
	{prefix: "mid_block.", component: UNet, keep: true},
	{prefix: "up_blocks.", component: UNet, keep: true},
}

// suffixes says what a tensor is to its module. Matching is on the longest
// suffix, so ".to_q_lora.down.weight" wins over shorter ones.
var suffixes = []struct {
	suffix string
	role   role
	format Format // "" when the suffix does not tell (alpha)
	// only restricts the row to one component, where the same suffix means
	// different modules (to_q_lora is to_q in the UNet, q_proj in CLIP).
	only Component
	// tail completes the module path for suffixes that name the module.
	tail string
	// refuse is why tensors with this suffix are refused.
	refuse string
}{
	{suffix: ".lora_down.weight", role: roleDown, format: Kohya},
	{suffix: ".lora_up.weight", role: roleUp, format: Kohya},
	{suffix: ".alpha", role: roleAlpha},
	{suffix: ".lora_A.weight", role: roleDown, format: PEFT},
	{suffix: ".lora_B.weight", role: roleUp, format: PEFT},
	{suffix: ".lora.down.weight", role: roleDown, format: Diffusers},
	{suffix: ".lora.up.weight", role: roleUp, format: Diffusers},
	{suffix: ".lora_linear_layer.down.weight", role: roleDown, format: Diffusers},
	{suffix: ".lora_linear_layer.up.weight", role: roleUp, format: Diffusers},
	{suffix: ".to_q_lora.down.weight", role: roleDown, format: Diffusers, only: UNet, tail: ".to_q"},
	{suffix: ".to_q_lora.up.weight", role: roleUp, format: Diffusers, only: UNet, tail: ".to_q"},
	{suffix: ".to_k_lora.down.weight", role: roleDown, format: Diffusers, only: UNet, tail: ".to_k"},
	{suffix: ".to_k_lora.up.weight", role: roleUp, format: Diffusers, only: UNet, tail: ".to_k"},
	{suffix: ".to_v_lora.down.weight", role: roleDown, format: Diffusers, only: UNet, tail: ".to_v"},
	{suffix: ".to_v_lora.up.weight", role: roleUp, format: Diffusers, only: UNet, tail: ".to_v"},
	{suffix: ".to_out_lora.down.weight", role: roleDown, format: Diffusers, only: UNet, tail: ".to_out.0"},
	{suffix: ".to_out_lora.up.weight", role: roleUp, format: Diffusers, only: UNet, tail: ".to_out.0"},
	{suffix: ".to_q_lora.down.weight", role: roleDown, format: Diffusers, only: TextEncoder, tail: ".q_proj"},
	{suffix: ".to_q_lora.up.weight", role: roleUp, format: Diffusers, only: TextEncoder, tail: ".q_proj"},
	{suffix: ".to_k_lora.down.weight", role: roleDown, format: Diffusers, only: TextEncoder, tail: ".k_proj"},
	{suffix: ".to_k_lora.up.weight", role: roleUp, format: Diffusers, only: TextEncoder, tail: ".k_proj"},
	{suffix: ".to_v_lora.down.weight", role: roleDown, format: Diffusers, only: TextEncoder, tail: ".v_proj"},
	{suffix: ".to_v_lora.up.weight", role: roleUp, format: Diffusers, only: TextEncoder, tail: ".v_proj"},
	{suffix: ".to_out_lora.down.weight", role: roleDown, format: Diffusers, only: TextEncoder, tail: ".out_proj"},
	{suffix: ".to_out_lora.up.weight", role: roleUp, format: Diffusers, only: TextEncoder, tail: ".out_proj"},

	// Other networks share the prefixes but not the math: merging only
	// their down/up pair would build a wrong model, so they are refused.
	{suffix: ".lora_mid.weight", refuse: "LoCon with a Tucker-decomposed mid tensor is not supported"},
	{suffix: ".dora_scale", refuse: "DoRA is not supported"},
	{suffix: ".lora_magnitude_vector", refuse: "DoRA is not supported"},
	{suffix: ".lora_magnitude_vector.weight", refuse: "DoRA is not supported"},
	{suffix: ".lora_B.bias", refuse: "LoRA biases are not supported"},
	{suffix: ".diff", refuse: "full weight differences are not supported"},
	{suffix: ".diff_b", refuse: "full bias differences are not supported"},
}

// markers refuse other LyCORIS networks by a fragment of the tensor suffix,
// which they spell in many variants (hada_w1_a, lokr_w2_b, hada_t1, ...).
var markers = []struct{ fragment, refuse string }{
	{".hada_", "LoHa (LyCORIS) is not supported"},
	{".lokr_", "LoKr (LyCORIS) is not supported"},
	{".oft_", "OFT is not supported"},
	{".boft_", "BOFT is not supported"},
	{".ia3_", "IA3 is not supported"},
}

// refusedPaths are module paths (first component, '.' or '_' after it) that
// only exist in models we do not build.
var refusedPaths = []struct {
	component Component
	first     string
	refuse    string
}{
	{UNet, "input_blocks", whyLDM},
	{UNet, "middle_block", whyLDM},
	{UNet, "output_blocks", whyLDM},
	{UNet, "label_emb", whySDXL},
	{UNet, "add_embedding", whySDXL},
}

// keyInfo is what the tables make of one tensor key.
type keyInfo struct {
	component Component
	path      string // module path, flattened when flat
	flat      bool
	role      role
	format    Format
	refuse    string // non-empty: the key is understood and refused
}

// classify reads a tensor key. ok is false when no convention recognizes it.
func classify(key string) (ki keyInfo, ok bool) {
	best := -1
	for i, p := range prefixes {
		if strings.HasPrefix(key, p.prefix) && (best < 0 || len(p.prefix) > len(prefixes[best].prefix)) {
			best = i
		}
	}
	if best < 0 {
		return keyInfo{}, false
	}
	p := prefixes[best]
	if p.refuse != "" {
		return keyInfo{refuse: p.refuse}, true
	}
	rest := key
	if !p.keep {
		rest = key[len(p.prefix):]
	}
	if !p.flat {
		// diffusers saved attention processors under ".processor."; the
		// module is the attention block itself.
		rest = strings.ReplaceAll(rest, ".processor.", ".")
	}
	for _, m := range markers {
		if strings.Contains(rest, m.fragment) {
			return keyInfo{refuse: m.refuse}, true
		}
	}
	s := -1
	for i, row := range suffixes {
		if row.only != "" && row.only != p.component {
			continue
		}
		if strings.HasSuffix(rest, row.suffix) && (s < 0 || len(row.suffix) > len(suffixes[s].suffix)) {
			s = i
		}
	}
	if s < 0 {
		return keyInfo{}, false
	}
	row := suffixes[s]
	if row.refuse != "" {
		return keyInfo{refuse: row.refuse}, true
	}
	path := rest[:len(rest)-len(row.suffix)]
	if path == "" {
		return keyInfo{}, false
	}
	path += row.tail
	for _, r := range refusedPaths {
		if r.component != p.component || !strings.HasPrefix(path, r.first) {
			continue
		}
		if after := path[len(r.first):]; after == "" || after[0] == '.' || after[0] == '_' {
			return keyInfo{refuse: r.refuse}, true
		}
	}
	format := row.format
	if p.flat {
		format = Kohya
	}
	return keyInfo{component: p.component, path: path, flat: p.flat, role: row.role, format: format}, true
}

// flatten is kohya's spelling of a module path.
func flatten(path string) string { return strings.ReplaceAll(path, ".", "_") }
