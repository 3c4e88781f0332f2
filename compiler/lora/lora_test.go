package lora

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// mapSource is an in-memory nn.Source.
type mapSource map[string]safetensors.Tensor

func (m mapSource) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	t, ok := m[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("no weight %q", name)
	}
	return t.DType, t.Shape, t.Data, nil
}

func (m mapSource) Has(name string) bool { _, ok := m[name]; return ok }

func (m mapSource) shapes() map[string][]int {
	out := map[string][]int{}
	for n, t := range m {
		out[n] = t.Shape
	}
	return out
}

func randValues(rng *rand.Rand, shape ...int) []float32 {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// toyUNet is a miniature UNet-named model covering every weight kind a LoRA
// patches: linear, 3×3 conv, 1×1 conv (proj_in when use_linear_projection
// is false), and an fp16-stored conv.
func toyUNet(rng *rand.Rand) mapSource {
	m := mapSource{}
	add := func(name string, shape ...int) {
		m[name] = safetensors.Float32Tensor(name, shape, randValues(rng, shape...))
	}
	add("mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight", 3, 5)
	add("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", 3, 3)
	add("mid_block.attentions.0.proj_in.weight", 3, 3, 1, 1)
	add("mid_block.attentions.0.proj_out.weight", 3, 3)
	add("mid_block.attentions.0.norm.weight", 3)
	add("mid_block.resnets.0.conv1.weight", 4, 2, 3, 3)
	add("mid_block.resnets.0.conv1.bias", 4)
	const half = "mid_block.resnets.0.conv2.weight"
	m[half] = safetensors.Float16Tensor(half, []int{4, 4, 3, 3}, randValues(rng, 4, 4, 3, 3))
	return m
}

// loraTensors builds a module's down/up (and alpha) tensors.
type loraModule struct {
	down, up   string // tensor keys
	alpha      string // "" for none
	alphaValue float32
	downS, upS []int
	downV, upV []float32
	wantTarget string
}

func newModule(rng *rand.Rand, down, up, alpha string, alphaValue float32, downShape, upShape []int, target string) loraModule {
	return loraModule{
		down: down, up: up, alpha: alpha, alphaValue: alphaValue,
		downS: downShape, upS: upShape,
		downV: randValues(rng, downShape...), upV: randValues(rng, upShape...),
		wantTarget: target,
	}
}

func (m loraModule) tensors() []safetensors.Tensor {
	ts := []safetensors.Tensor{
		safetensors.Float32Tensor(m.down, m.downS, m.downV),
		safetensors.Float32Tensor(m.up, m.upS, m.upV),
	}
	if m.alpha != "" {
		ts = append(ts, safetensors.Float32Tensor(m.alpha, nil, []float32{m.alphaValue}))
	}
	return ts
}

func encode(t testing.TB, ts []safetensors.Tensor) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func parseModules(t *testing.T, name string, opts Options, mods ...loraModule) *File {
	t.Helper()
	var ts []safetensors.Tensor
	for _, m := range mods {
		ts = append(ts, m.tensors()...)
	}
	f, err := Parse(name, encode(t, ts), opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// reference is W + Σ scale·alpha/rank·up·down, the rule the README states,
// computed directly.
func reference(t *testing.T, base mapSource, name string, terms ...struct {
	m     loraModule
	scale float64
}) []float32 {
	t.Helper()
	w, err := safetensors.DecodeFloat32(base[name].Data, base[name].DType)
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(w)
	rows := base[name].Shape[0]
	cols := len(w) / rows
	for _, tm := range terms {
		r := tm.m.downS[0]
		alpha := float64(r)
		if tm.m.alpha != "" {
			alpha = float64(tm.m.alphaValue)
		}
		f := tm.scale * alpha / float64(r)
		for o := range rows {
			for j := range cols {
				var s float64
				for k := range r {
					s += float64(tm.m.upV[o*r+k]) * float64(tm.m.downV[k*cols+j])
				}
				out[o*cols+j] += float32(f * s)
			}
		}
	}
	return out
}

func assertNear(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol*math.Max(1, math.Abs(float64(want[i])))) {
			t.Fatalf("%s[%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}

type term = struct {
	m     loraModule
	scale float64
}

// Every weight kind, two files in two formats hitting one weight, alpha
// present and absent: merged values follow the rule, untouched weights are
// the base's own bytes.
func TestMergeMath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := toyUNet(rng)
	const mid = "mid_block.attentions.0."
	q := newModule(rng, "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
		"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
		"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha", 8,
		[]int{2, 5}, []int{3, 2}, mid+"transformer_blocks.0.attn1.to_q.weight")
	// linear LoRA on a 1×1 conv weight, 1×1 conv LoRA on a linear weight
	projIn := newModule(rng, "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight",
		"lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", "", 0,
		[]int{2, 3}, []int{3, 2}, mid+"proj_in.weight")
	projOut := newModule(rng, "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight",
		"lora_unet_mid_block_attentions_0_proj_out.lora_up.weight",
		"lora_unet_mid_block_attentions_0_proj_out.alpha", 1,
		[]int{2, 3, 1, 1}, []int{3, 2, 1, 1}, mid+"proj_out.weight")
	// LoCon: 3×3 down, 1×1 up, on an F32 and an F16 conv
	conv1 := newModule(rng, "lora_unet_mid_block_resnets_0_conv1.lora_down.weight",
		"lora_unet_mid_block_resnets_0_conv1.lora_up.weight",
		"lora_unet_mid_block_resnets_0_conv1.alpha", 3,
		[]int{3, 2, 3, 3}, []int{4, 3, 1, 1}, "mid_block.resnets.0.conv1.weight")
	conv2 := newModule(rng, "lora_unet_mid_block_resnets_0_conv2.lora_down.weight",
		"lora_unet_mid_block_resnets_0_conv2.lora_up.weight", "", 0,
		[]int{2, 4, 3, 3}, []int{4, 2, 1, 1}, "mid_block.resnets.0.conv2.weight")
	kohya := parseModules(t, "kohya.safetensors", Options{}, q, projIn, projOut, conv1, conv2)
	if kohya.Format() != Kohya {
		t.Errorf("format %q, want %q", kohya.Format(), Kohya)
	}
	q2 := newModule(rng, "unet."+mid+"transformer_blocks.0.attn1.to_q.lora_A.weight",
		"unet."+mid+"transformer_blocks.0.attn1.to_q.lora_B.weight", "", 0,
		[]int{1, 5}, []int{3, 1}, q.wantTarget)
	out0 := newModule(rng, "unet."+mid+"transformer_blocks.0.attn1.to_out.0.lora_A.weight",
		"unet."+mid+"transformer_blocks.0.attn1.to_out.0.lora_B.weight",
		"unet."+mid+"transformer_blocks.0.attn1.to_out.0.alpha", 4,
		[]int{2, 3}, []int{3, 2}, mid+"transformer_blocks.0.attn1.to_out.0.weight")
	peft := parseModules(t, "peft.safetensors", Options{}, q2, out0)
	if peft.Format() != PEFT {
		t.Errorf("format %q, want %q", peft.Format(), PEFT)
	}

	src, rep, err := Merge(UNet, base, base.shapes(), []Applied{{kohya, 0.5}, {peft, -1.25}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantTargets := []string{}
	for _, m := range []loraModule{q, projIn, projOut, conv1, conv2, out0} {
		wantTargets = append(wantTargets, m.wantTarget)
	}
	slices.Sort(wantTargets)
	if !slices.Equal(rep.Targets, wantTargets) || rep.Modules != 7 || len(rep.Warnings) != 0 {
		t.Errorf("report %+v, want targets %v from 7 modules", rep, wantTargets)
	}
	check := func(name string, terms ...term) {
		t.Helper()
		dt, shape, raw, err := src.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if dt != safetensors.F32 || !slices.Equal(shape, base[name].Shape) {
			t.Errorf("%s: %s %v, want F32 %v", name, dt, shape, base[name].Shape)
		}
		got, _ := safetensors.DecodeFloat32(raw, dt)
		assertNear(t, name, got, reference(t, base, name, terms...), 1e-6)
	}
	check(q.wantTarget, term{q, 0.5}, term{q2, -1.25})
	check(projIn.wantTarget, term{projIn, 0.5})
	check(projOut.wantTarget, term{projOut, 0.5})
	check(conv1.wantTarget, term{conv1, 0.5})
	check(conv2.wantTarget, term{conv2, 0.5})
	check(out0.wantTarget, term{out0, -1.25})

	for _, name := range []string{"mid_block.attentions.0.norm.weight", "mid_block.resnets.0.conv1.bias"} {
		dt, shape, raw, err := src.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if dt != base[name].DType || !slices.Equal(shape, base[name].Shape) || &raw[0] != &base[name].Data[0] {
			t.Errorf("%s: not passed through unchanged", name)
		}
	}
	if !src.Has(q.wantTarget) || src.Has("nope.weight") {
		t.Error("Has does not follow the base")
	}
	if _, _, _, err := src.Tensor("nope.weight"); err == nil {
		t.Error("missing weight: no error")
	}
}

// A patched weight is computed once and shared until released, also under
// concurrent readers.
func TestMergeCacheAndRelease(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := toyUNet(rng)
	m := newModule(rng, "lora_unet_mid_block_resnets_0_conv1.lora_down.weight",
		"lora_unet_mid_block_resnets_0_conv1.lora_up.weight", "", 0,
		[]int{2, 2, 3, 3}, []int{4, 2, 1, 1}, "mid_block.resnets.0.conv1.weight")
	f := parseModules(t, "a.safetensors", Options{}, m)
	src, _, err := Merge(UNet, base, base.shapes(), []Applied{{f, 1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	firsts := make([]*byte, 8)
	for i := range firsts {
		wg.Go(func() {
			_, _, raw, err := src.Tensor(m.wantTarget)
			if err != nil {
				t.Error(err)
				return
			}
			firsts[i] = &raw[0]
		})
	}
	wg.Wait()
	for _, p := range firsts[1:] {
		if p != firsts[0] {
			t.Fatal("concurrent reads computed the weight more than once")
		}
	}
	before := sourceFloats(t, src, m.wantTarget)
	src.Release(m.wantTarget)
	_, _, raw, _ := src.Tensor(m.wantTarget)
	if &raw[0] == firsts[0] {
		t.Error("Release kept the cached bytes")
	}
	if !slices.Equal(before, sourceFloats(t, src, m.wantTarget)) {
		t.Error("recomputed weight differs")
	}
	if got := src.Targets(); !slices.Equal(got, []string{m.wantTarget}) {
		t.Errorf("targets %v", got)
	}
	f.Close()
	src.Release(m.wantTarget)
	if _, _, _, err := src.Tensor(m.wantTarget); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("read after Close: %v, want a closed-file error", err)
	}
}

// The text encoder part and the UNet part of one file merge separately.
func TestComponentsSeparate(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const qproj = "text_model.encoder.layers.0.self_attn.q_proj.weight"
	te := mapSource{qproj: safetensors.Float32Tensor(qproj, []int{3, 3}, randValues(rng, 3, 3))}
	u := toyUNet(rng)
	mt := newModule(rng, "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
		"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", "", 0,
		[]int{2, 3}, []int{3, 2}, qproj)
	mu := newModule(rng, "lora_unet_mid_block_attentions_0_proj_out.lora_down.weight",
		"lora_unet_mid_block_attentions_0_proj_out.lora_up.weight", "", 0,
		[]int{2, 3}, []int{3, 2}, "mid_block.attentions.0.proj_out.weight")
	f := parseModules(t, "both.safetensors", Options{}, mt, mu)
	if n, m := len(f.For(UNet)), len(f.For(TextEncoder)); n != 1 || m != 1 {
		t.Fatalf("For: %d UNet, %d text encoder modules", n, m)
	}
	got := f.For(TextEncoder)[0]
	want := Module{Key: mt.down, Path: "text_model_encoder_layers_0_self_attn_q_proj", Format: Kohya, Rank: 2, Alpha: 2, Down: []int{2, 3}, Up: []int{3, 2}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("For(TextEncoder) = %+v, want %+v", got, want)
	}
	_, rep, err := Merge(TextEncoder, te, te.shapes(), []Applied{{f, 1}}, Options{})
	if err != nil || !slices.Equal(rep.Targets, []string{qproj}) {
		t.Errorf("text encoder merge: %v, targets %v", err, rep.Targets)
	}
	_, rep, err = Merge(UNet, u, u.shapes(), []Applied{{f, 1}}, Options{})
	if err != nil || !slices.Equal(rep.Targets, []string{mu.wantTarget}) {
		t.Errorf("UNet merge: %v, targets %v", err, rep.Targets)
	}
}

// The pre-PEFT diffusers spellings merge exactly as their PEFT equivalent.
func TestOlderDiffusersFormats(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	base := toyUNet(rng)
	const qproj = "text_model.encoder.layers.0.self_attn.q_proj.weight"
	const fc1 = "text_model.encoder.layers.0.mlp.fc1.weight"
	base[qproj] = safetensors.Float32Tensor(qproj, []int{3, 3}, randValues(rng, 3, 3))
	base[fc1] = safetensors.Float32Tensor(fc1, []int{4, 3}, randValues(rng, 4, 3))
	const attn = "mid_block.attentions.0.transformer_blocks.0.attn1"
	cases := []struct {
		c           Component
		down, up    string
		target      string
		downS, upS  []int
		withoutUNet bool
	}{
		{UNet, "unet." + attn + ".processor.to_q_lora.down.weight", "unet." + attn + ".processor.to_q_lora.up.weight", attn + ".to_q.weight", []int{2, 5}, []int{3, 2}, false},
		{UNet, attn + ".processor.to_out_lora.down.weight", attn + ".processor.to_out_lora.up.weight", attn + ".to_out.0.weight", []int{2, 3}, []int{3, 2}, true},
		{UNet, "unet.mid_block.resnets.0.conv1.lora.down.weight", "unet.mid_block.resnets.0.conv1.lora.up.weight", "mid_block.resnets.0.conv1.weight", []int{2, 2, 3, 3}, []int{4, 2, 1, 1}, false},
		{TextEncoder, "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight", "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight", qproj, []int{2, 3}, []int{3, 2}, false},
		{TextEncoder, "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight", "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight", fc1, []int{2, 3}, []int{4, 2}, false},
	}
	for _, tc := range cases {
		m := newModule(rng, tc.down, tc.up, "", 0, tc.downS, tc.upS, tc.target)
		f := parseModules(t, "old.safetensors", Options{}, m)
		if f.Format() != Diffusers {
			t.Errorf("%s: format %q", tc.down, f.Format())
		}
		src, rep, err := Merge(tc.c, base, base.shapes(), []Applied{{f, 0.8}}, Options{})
		if err != nil {
			t.Fatalf("%s: %v", tc.down, err)
		}
		if !slices.Equal(rep.Targets, []string{tc.target}) {
			t.Fatalf("%s: targets %v, want %s", tc.down, rep.Targets, tc.target)
		}
		assertNear(t, tc.target, sourceFloats(t, src, tc.target), reference(t, base, tc.target, term{m, 0.8}), 1e-6)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		key    string
		want   keyInfo
		refuse string // fragment of the refusal
	}{
		{key: "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", want: keyInfo{UNet, "down_blocks_0_attentions_0_proj_in", true, roleDown, Kohya, ""}},
		{key: "lora_unet_down_blocks_0_attentions_0_proj_in.alpha", want: keyInfo{UNet, "down_blocks_0_attentions_0_proj_in", true, roleAlpha, Kohya, ""}},
		{key: "lora_te_text_model_encoder_layers_3_mlp_fc2.lora_up.weight", want: keyInfo{TextEncoder, "text_model_encoder_layers_3_mlp_fc2", true, roleUp, Kohya, ""}},
		{key: "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj.lora_B.weight", want: keyInfo{UNet, "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj", false, roleUp, PEFT, ""}},
		{key: "text_encoder.text_model.encoder.layers.0.self_attn.out_proj.lora_A.weight", want: keyInfo{TextEncoder, "text_model.encoder.layers.0.self_attn.out_proj", false, roleDown, PEFT, ""}},
		{key: "unet.mid_block.attentions.0.proj_in.alpha", want: keyInfo{UNet, "mid_block.attentions.0.proj_in", false, roleAlpha, "", ""}},
		{key: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight", want: keyInfo{UNet, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0", false, roleUp, Diffusers, ""}},
		{key: "up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.down.weight", want: keyInfo{UNet, "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k", false, roleDown, Diffusers, ""}},
		{key: "text_encoder.text_model.encoder.layers.1.self_attn.to_v_lora.down.weight", want: keyInfo{TextEncoder, "text_model.encoder.layers.1.self_attn.v_proj", false, roleDown, Diffusers, ""}},
		{key: "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", refuse: "SDXL"},
		{key: "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha", refuse: "SDXL"},
		{key: "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight", refuse: "SDXL"},
		{key: "lora_unet_input_blocks_4_1_proj_in.lora_down.weight", refuse: "LDM"},
		{key: "lora_unet_output_blocks_0_0_in_layers_2.alpha", refuse: "LDM"},
		{key: "unet.add_embedding.linear_1.lora_A.weight", refuse: "SDXL"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight", refuse: "Tucker"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", refuse: "LoHa"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.lokr_w2", refuse: "LoKr"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.dora_scale", refuse: "DoRA"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.diff", refuse: "difference"},
		{key: "bundle_emb.style.string_to_param.*"},
		{key: "lora_unet_.lora_down.weight"},
		{key: "unet.down_blocks.0.resnets.0.conv1.weight"},
		{key: "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.bias"},
	} {
		got, ok := classify(tc.key)
		switch {
		case tc.refuse != "":
			if !ok || !strings.Contains(got.refuse, tc.refuse) {
				t.Errorf("%s: %+v, %v; want refused (%s)", tc.key, got, ok, tc.refuse)
			}
		case tc.want == (keyInfo{}):
			if ok {
				t.Errorf("%s: recognized as %+v, want unrecognized", tc.key, got)
			}
		case !ok || got != tc.want:
			t.Errorf("%s: %+v, %v; want %+v", tc.key, got, ok, tc.want)
		}
	}
}

// wantErr fails unless err mentions every fragment.
func wantErr(t *testing.T, what string, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
	t.Logf("%s: %v", what, err)
}

func TestLoadRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	f32 := func(name string, shape ...int) safetensors.Tensor {
		return safetensors.Float32Tensor(name, shape, randValues(rng, shape...))
	}
	const k = "lora_unet_mid_block_attentions_0_proj_out"
	for _, tc := range []struct {
		what      string
		tensors   []safetensors.Tensor
		fragments []string
	}{
		{"rank mismatch", []safetensors.Tensor{f32(k+".lora_down.weight", 4, 3), f32(k+".lora_up.weight", 3, 2)}, []string{k + ".lora_down.weight", "rank mismatch"}},
		{"missing up", []safetensors.Tensor{f32(k+".lora_down.weight", 4, 3)}, []string{k + ".lora_down.weight", "no up"}},
		{"missing down", []safetensors.Tensor{f32(k+".lora_up.weight", 3, 4)}, []string{k + ".lora_up.weight", "no down"}},
		{"alpha alone", []safetensors.Tensor{f32(k+".alpha", 1)}, []string{k + ".alpha", "without"}},
		{"alpha vector", []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3), f32(k+".lora_up.weight", 3, 2), f32(k+".alpha", 2)}, []string{k + ".alpha", "one element"}},
		{"3-d down", []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3, 3), f32(k+".lora_up.weight", 3, 2)}, []string{k + ".lora_down.weight", "[rank, in]"}},
		{"3×3 up", []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3, 3, 3), f32(k+".lora_up.weight", 3, 2, 3, 3)}, []string{k + ".lora_up.weight", "[out, rank, 1, 1]"}},
		{"zero rank", []safetensors.Tensor{f32(k+".lora_down.weight", 0, 3), f32(k+".lora_up.weight", 3, 0)}, []string{"empty"}},
		{"mixed naming", []safetensors.Tensor{f32("unet.m.lora_A.weight", 2, 3), f32("unet.m.lora.up.weight", 3, 2)}, []string{"unet.m.lora_A.weight", "mixes"}},
		{"two downs", []safetensors.Tensor{f32("unet.m.lora.down.weight", 2, 3), f32("unet.m.lora_linear_layer.down.weight", 2, 3)}, []string{"unet.m.lora_linear_layer.down.weight", "already the down tensor"}},
		{"integer tensor", []safetensors.Tensor{{Name: k + ".lora_down.weight", DType: safetensors.I32, Shape: []int{1, 1}, Data: make([]byte, 4)}}, []string{k + ".lora_down.weight", "I32"}},
		{"SDXL", []safetensors.Tensor{f32("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, 3)}, []string{"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "SDXL"}},
		{"LoHa", []safetensors.Tensor{f32(k+".hada_w1_a", 3, 2)}, []string{k + ".hada_w1_a", "LoHa"}},
		{"unknown key", []safetensors.Tensor{f32("some_embedding", 3)}, []string{"some_embedding", "not a LoRA tensor"}},
	} {
		_, err := Parse("bad.safetensors", encode(t, tc.tensors), Options{})
		wantErr(t, tc.what, err, append(tc.fragments, "bad.safetensors")...)
	}

	// Lenient loading skips what it does not recognize, never what it refuses.
	ts := []safetensors.Tensor{f32(k+".lora_down.weight", 2, 3), f32(k+".lora_up.weight", 3, 2), f32("bundle_emb.x.string_to_param.*", 3)}
	f, err := Parse("lenient.safetensors", encode(t, ts), Options{Lenient: true})
	if err != nil {
		t.Fatal(err)
	}
	if w := f.Warnings(); len(w) != 1 || !strings.Contains(w[0], "bundle_emb.x.string_to_param.*") {
		t.Errorf("warnings %q", w)
	}
	_, err = Parse("lenient.safetensors", encode(t, append(ts, f32("lora_te1_x.lora_down.weight", 2, 3))), Options{Lenient: true})
	wantErr(t, "lenient SDXL", err, "SDXL")
}

func TestLoadTruncated(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const k = "lora_unet_mid_block_attentions_0_proj_out"
	img := encode(t, []safetensors.Tensor{
		safetensors.Float32Tensor(k+".lora_down.weight", []int{2, 3}, randValues(rng, 2, 3)),
		safetensors.Float32Tensor(k+".lora_up.weight", []int{3, 2}, randValues(rng, 3, 2)),
	})
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := os.WriteFile(good, img, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Path() != good || len(f.For(UNet)) != 1 {
		t.Errorf("loaded %s with %d UNet modules", f.Path(), len(f.For(UNet)))
	}
	f.Close()
	for _, n := range []int{0, 7, 20, len(img) - 4} {
		p := filepath.Join(dir, fmt.Sprintf("cut%d.safetensors", n))
		if err := os.WriteFile(p, img[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, Options{Lenient: true})
		wantErr(t, fmt.Sprintf("truncated to %d bytes", n), err, p)
	}
	_, err = Load(filepath.Join(dir, "missing.safetensors"), Options{})
	wantErr(t, "missing file", err, "missing.safetensors")
}

func TestMergeRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	base := toyUNet(rng)
	shapes := base.shapes()
	const k = "lora_unet_mid_block_attentions_0_proj_out"
	good := newModule(rng, k+".lora_down.weight", k+".lora_up.weight", "", 0, []int{2, 3}, []int{3, 2}, "mid_block.attentions.0.proj_out.weight")
	stray := newModule(rng, "lora_unet_mid_block_attentions_0_transformer_blocks_1_attn1_to_q.lora_down.weight",
		"lora_unet_mid_block_attentions_0_transformer_blocks_1_attn1_to_q.lora_up.weight", "", 0, []int{2, 3}, []int{3, 2}, "")

	// Unmatched keys: an error naming the key, or a warning when lenient.
	f := parseModules(t, "stray.safetensors", Options{}, good, stray)
	_, _, err := Merge(UNet, base, shapes, []Applied{{f, 1}}, Options{})
	wantErr(t, "unmatched", err, "stray.safetensors", stray.down, "matches no unet weight")
	_, rep, err := Merge(UNet, base, shapes, []Applied{{f, 1}}, Options{Lenient: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], stray.down) || rep.Modules != 1 || len(rep.Targets) != 1 {
		t.Errorf("lenient report %+v", rep)
	}
	stray2 := newModule(rng, "unet.mid_block.attentions.0.transformer_blocks.1.attn1.to_k.lora_A.weight",
		"unet.mid_block.attentions.0.transformer_blocks.1.attn1.to_k.lora_B.weight", "", 0, []int{2, 3}, []int{3, 2}, "")
	f2 := parseModules(t, "strays.safetensors", Options{}, good, stray, stray2)
	if f2.Format() != Mixed {
		t.Errorf("format %q, want %q", f2.Format(), Mixed)
	}
	_, _, err = Merge(UNet, base, shapes, []Applied{{f2, 1}}, Options{})
	wantErr(t, "two unmatched", err, stray.down, "2 of 3 modules unmatched", stray2.down)

	// ...but a file of which nothing matches is for another model.
	onlyStray := parseModules(t, "other.safetensors", Options{}, stray)
	_, _, err = Merge(UNet, base, shapes, []Applied{{onlyStray, 1}}, Options{Lenient: true})
	wantErr(t, "nothing matches", err, "other.safetensors", "another model")

	shapeCases := []struct {
		what       string
		key        string
		downS, upS []int
		fragments  []string
	}{
		{"outputs", k, []int{2, 3}, []int{5, 2}, []string{"outputs"}},
		{"inputs (SD2 width on SD1)", k, []int{2, 1024}, []int{3, 2}, []string{"inputs", "another base model"}},
		{"3×3 LoRA on a linear weight", k, []int{2, 3, 3, 3}, []int{3, 2, 1, 1}, []string{"kernel"}},
		{"linear LoRA on a 3×3 conv", "lora_unet_mid_block_resnets_0_conv1", []int{2, 2}, []int{4, 2}, []string{"kernel"}},
		{"LoRA on a norm", "lora_unet_mid_block_attentions_0_norm", []int{2, 3}, []int{3, 2}, []string{"neither a linear nor a conv"}},
	}
	for _, tc := range shapeCases {
		m := newModule(rng, tc.key+".lora_down.weight", tc.key+".lora_up.weight", "", 0, tc.downS, tc.upS, "")
		f := parseModules(t, "shape.safetensors", Options{}, m)
		_, _, err := Merge(UNet, base, shapes, []Applied{{f, 1}}, Options{Lenient: true})
		wantErr(t, tc.what, err, append(tc.fragments, "shape.safetensors", m.down)...)
	}

	// Two spellings of one module in one file.
	dup := newModule(rng, "unet.mid_block.attentions.0.proj_out.lora_A.weight", "unet.mid_block.attentions.0.proj_out.lora_B.weight", "", 0, []int{2, 3}, []int{3, 2}, "")
	f = parseModules(t, "dup.safetensors", Options{}, good, dup)
	_, _, err = Merge(UNet, base, shapes, []Applied{{f, 1}}, Options{})
	wantErr(t, "duplicate", err, "dup.safetensors", "already")

	// Flattening makes these two weights indistinguishable to a kohya key.
	amb := mapSource{}
	for _, n := range []string{"a.b_c.weight", "a_b.c.weight"} {
		amb[n] = safetensors.Float32Tensor(n, []int{3, 3}, randValues(rng, 3, 3))
	}
	f = parseModules(t, "amb.safetensors", Options{}, newModule(rng, "lora_unet_a_b_c.lora_down.weight", "lora_unet_a_b_c.lora_up.weight", "", 0, []int{1, 3}, []int{3, 1}, ""))
	_, _, err = Merge(UNet, amb, amb.shapes(), []Applied{{f, 1}}, Options{Lenient: true})
	wantErr(t, "ambiguous", err, "lora_unet_a_b_c.lora_down.weight", "ambiguous", "a.b_c", "a_b.c")

	f = parseModules(t, "ok.safetensors", Options{}, good)
	_, _, err = Merge(UNet, base, shapes, []Applied{{f, math.NaN()}}, Options{})
	wantErr(t, "NaN scale", err, "ok.safetensors", "scale")
	_, _, err = Merge(UNet, base, shapes, []Applied{{nil, 1}}, Options{})
	wantErr(t, "nil file", err, "no file")
	_, _, err = Merge("vae", base, shapes, nil, Options{})
	wantErr(t, "component", err, "vae")

	// A base that does not hold what the shapes promised fails on read.
	bad := mapSource{}
	for n, v := range base {
		bad[n] = v
	}
	bad[good.wantTarget] = safetensors.Float32Tensor(good.wantTarget, []int{3, 4}, randValues(rng, 3, 4))
	src, _, err := Merge(UNet, bad, shapes, []Applied{{f, 1}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = src.Tensor(good.wantTarget)
	wantErr(t, "base shape", err, good.wantTarget, "[3 4]")
}

// BenchmarkMergeConv merges a rank-32 LoCon into a 640→640 3×3 conv, an SD1.5
// down_blocks.1 resnet conv2.
func BenchmarkMergeConv(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const name = "down_blocks.1.resnets.0.conv2.weight"
	shape := []int{640, 640, 3, 3}
	base := mapSource{name: safetensors.Float16Tensor(name, shape, randValues(rng, shape...))}
	m := newModule(rng, "lora_unet_down_blocks_1_resnets_0_conv2.lora_down.weight", "lora_unet_down_blocks_1_resnets_0_conv2.lora_up.weight",
		"", 0, []int{32, 640, 3, 3}, []int{640, 32, 1, 1}, name)
	f, err := Parse("bench.safetensors", encode(b, m.tensors()), Options{})
	if err != nil {
		b.Fatal(err)
	}
	src, _, err := Merge(UNet, base, base.shapes(), []Applied{{f, 1}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(4 * 640 * 640 * 9))
	for b.Loop() {
		src.Release(name)
		if _, _, _, err := src.Tensor(name); err != nil {
			b.Fatal(err)
		}
	}
}
