package lora

import (
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

const (
	goldenScale = 0.75
	// The README's targets: 96 UNet modules, and q/k/v/out_proj, fc1, fc2
	// of each of the tiny text encoder's 5 layers.
	wantUNetTargets = 96
	wantTextTargets = 5 * 6
)

// goldenModel is the tiny SD1.5 UNet and text encoder, unmerged.
type goldenModel struct {
	unetCfg   unet.Config
	unetSrc   nn.FileSource
	clipCfg   clip.Config
	clipSrc   nn.FileSource
	backend   compute.Backend // one for every program: tensors are bound to it
	ids       []int32
	idsShape  []int
	sample    *tensors.Tensor
	context   *tensors.Tensor
	timestep  *tensors.Tensor
	unetWant  []float32
	clipWant  []float32
	unetPlain []float32
}

func openSafetensors(t *testing.T, elem ...string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(golden.Path(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func loadGoldenModel(t *testing.T) *goldenModel {
	t.Helper()
	g := &goldenModel{}
	var err error
	if g.backend, err = nn.NewBackend("go"); err != nil {
		t.Fatal(err)
	}
	if g.unetCfg, err = unet.LoadConfig(golden.Path(t, "tiny-sd15", "unet", "config.json")); err != nil {
		t.Fatal(err)
	}
	g.unetSrc = nn.FileSource{File: openSafetensors(t, "tiny-sd15", "unet", "diffusion_pytorch_model.safetensors")}
	if g.clipCfg, err = clip.LoadConfig(golden.Path(t, "tiny-sd15", "text_encoder", "config.json")); err != nil {
		t.Fatal(err)
	}
	g.clipSrc = nn.FileSource{File: openSafetensors(t, "tiny-sd15", "text_encoder", "model.safetensors")}

	tok := openSafetensors(t, "tokenizer_ref.safetensors")
	ids, dims, err := tok.Int64s("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	g.idsShape = dims
	for _, id := range ids {
		g.ids = append(g.ids, int32(id))
	}
	const ref = "controlnet_unet_ref.safetensors"
	v, shape := golden.Float32s(t, ref, "sample")
	g.sample = tensors.FromFlatDataAndDimensions(v, shape...)
	v, shape = golden.Float32s(t, ref, "encoder_hidden_states")
	g.context = tensors.FromFlatDataAndDimensions(v, shape...)
	ts, _, err := openSafetensors(t, ref).Int64s("timestep_t500")
	if err != nil {
		t.Fatal(err)
	}
	g.timestep = tensors.FromScalar(float32(ts[0]))
	g.unetPlain, _ = golden.Float32s(t, ref, "unet_t500_plain")
	g.unetWant, _ = golden.Float32s(t, "lora_ref.safetensors", "unet_merged_t500")
	g.clipWant, _ = golden.Float32s(t, "lora_ref.safetensors", "text_encoder_merged_last_hidden_state")
	return g
}

func (g *goldenModel) runUNet(t *testing.T, src nn.Source) []float32 {
	t.Helper()
	return g.runUNetWeights(t, nn.NewWeights(g.backend, src, nn.Widen))
}

func (g *goldenModel) runUNetWeights(t *testing.T, w *nn.Weights) []float32 {
	t.Helper()
	model, err := unet.NewUNet(g.unetCfg)
	if err != nil {
		t.Fatal(err)
	}
	in := []shapes.Shape{g.sample.Shape(), shapes.Make(dtypes.Float32), g.context.Shape()}
	p, err := nn.Compile("unet_lora", w, in, func(s nn.Scope, x []*graph.Node) []*graph.Node {
		return []*graph.Node{nn.NHWCToNCHW(model.Forward(s, nn.NCHWToNHWC(x[0]), x[1], x[2], nil))}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, err := p.Run(g.sample, g.timestep, g.context)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out[0])
}

func (g *goldenModel) runTextEncoder(t *testing.T, src nn.Source) []float32 {
	t.Helper()
	return g.runTextEncoderWeights(t, nn.NewWeights(g.backend, src, nn.Widen))
}

func (g *goldenModel) runTextEncoderWeights(t *testing.T, w *nn.Weights) []float32 {
	t.Helper()
	m, err := clip.New(g.clipCfg)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := clip.NewEncoder(m, w, g.idsShape[0], g.idsShape[1], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	out, err := enc.Encode(g.ids)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// merged is one golden LoRA merged into both components.
type merged struct {
	unet, text       *Source
	unetRep, textRep Report
}

// merge loads file, closing it when owner ends (the merged Sources read it
// lazily, after the subtest that merged it).
func (g *goldenModel) merge(t, owner *testing.T, file string) merged {
	t.Helper()
	f, err := Load(golden.Path(t, file), Options{})
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() { f.Close() })
	loras := []Applied{{File: f, Scale: goldenScale}}
	var m merged
	if m.unet, m.unetRep, err = Merge(UNet, g.unetSrc, g.unetCfg.WeightShapes(false), loras, Options{}); err != nil {
		t.Fatal(err)
	}
	if m.text, m.textRep, err = Merge(TextEncoder, g.clipSrc, g.clipCfg.WeightShapes(), loras, Options{}); err != nil {
		t.Fatal(err)
	}
	if n := len(m.unetRep.Targets); n != wantUNetTargets || m.unetRep.Modules != n {
		t.Errorf("%s: %d UNet targets from %d modules, want %d", file, n, m.unetRep.Modules, wantUNetTargets)
	}
	if n := len(m.textRep.Targets); n != wantTextTargets || m.textRep.Modules != n {
		t.Errorf("%s: %d text encoder targets from %d modules, want %d", file, n, m.textRep.Modules, wantTextTargets)
	}
	return m
}

// Both golden LoRAs, merged at 0.75 into tiny-sd15, reproduce diffusers'
// UNet and text encoder outputs on the merged state dicts.
func TestGoldenMerge(t *testing.T) {
	top := t
	g := loadGoldenModel(t)
	results := map[string]merged{}
	for _, tc := range []struct {
		file   string
		format Format
	}{
		{"lora_kohya.safetensors", Kohya},
		{"lora_peft.safetensors", PEFT},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m := g.merge(t, top, tc.file)
			results[tc.file] = m
			unetOut := g.runUNet(t, m.unet)
			golden.AssertClose(t, tc.file+" unet_merged_t500", unetOut, g.unetWant, 1e-4)
			if d, _ := golden.MaxAbsDiff(unetOut, g.unetPlain); d < 1e-3 {
				t.Errorf("merged UNet output is within %.3g of the plain one: the LoRA had no effect", d)
			}
			golden.AssertClose(t, tc.file+" text_encoder_merged_last_hidden_state", g.runTextEncoder(t, m.text), g.clipWant, 1e-4)
		})
	}

	// The two files hold the same LoRA (PEFT with alpha/rank folded into
	// lora_B): their merged weights agree to float32 rounding.
	k, p := results["lora_kohya.safetensors"], results["lora_peft.safetensors"]
	if k.unet == nil || p.unet == nil {
		return
	}
	for _, pair := range [][2]*Source{{k.unet, p.unet}, {k.text, p.text}} {
		var worst float64
		var worstName string
		for _, name := range pair[0].Targets() {
			a := sourceFloats(t, pair[0], name)
			b := sourceFloats(t, pair[1], name)
			if d, _ := golden.MaxAbsDiff(a, b); d > worst || worstName == "" {
				worst, worstName = d, name
			}
		}
		if worst > 1e-6 {
			t.Errorf("kohya and PEFT merges differ by %.3g at %s", worst, worstName)
		}
		t.Logf("kohya vs PEFT merged weights: max |diff| %.3g (%s)", worst, worstName)
	}
}

func sourceFloats(t *testing.T, s nn.Source, name string) []float32 {
	t.Helper()
	dt, _, raw, err := s.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := safetensors.DecodeFloat32(raw, dt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The golden LoRA on a model of other widths (here the cross-attention
// width of SD2 against SD1's) fails before anything is computed, naming a
// key; so does its text encoder part offered to the UNet.
func TestGoldenWrongModel(t *testing.T) {
	g := loadGoldenModel(t)
	f, err := Load(golden.Path(t, "lora_kohya.safetensors"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := g.unetCfg
	cfg.CrossAttentionDim *= 2
	_, _, err = Merge(UNet, g.unetSrc, cfg.WeightShapes(false), []Applied{{f, 1}}, Options{Lenient: true})
	wantErr(t, "SD1 LoRA on wider cross-attention", err, "lora_kohya.safetensors", "attn2_to_k.lora_down.weight", "another base model")

	_, _, err = Merge(UNet, g.clipSrc, g.clipCfg.WeightShapes(), []Applied{{f, 1}}, Options{Lenient: true})
	wantErr(t, "UNet LoRA on the text encoder's names", err, "lora_kohya.safetensors", "another model")
}

// Both golden LoRAs applied unmerged (beside each weight in the graph, as
// PEFT runs them) reproduce the same diffusers outputs, and every LoRA
// module found its layer.
func TestGoldenUnmerged(t *testing.T) {
	g := loadGoldenModel(t)
	for _, file := range []string{"lora_kohya.safetensors", "lora_peft.safetensors"} {
		t.Run(file, func(t *testing.T) {
			f, err := Load(golden.Path(t, file), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			loras := []Applied{{File: f, Scale: goldenScale}}
			ul, rep, err := Unmerged(UNet, g.unetCfg.WeightShapes(false), loras, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Targets) != wantUNetTargets || len(ul.List) != wantUNetTargets {
				t.Errorf("%d UNet targets, %d modules, want %d", len(rep.Targets), len(ul.List), wantUNetTargets)
			}
			uw := nn.NewWeights(g.backend, g.unetSrc, nn.Widen).WithLoRAs(ul)
			unetOut := g.runUNetWeights(t, uw)
			if unused := uw.UnusedLoRAs(); len(unused) > 0 {
				t.Errorf("UNet LoRAs no layer applied: %v", unused)
			}
			golden.AssertClose(t, file+" unmerged unet_merged_t500", unetOut, g.unetWant, 1e-4)

			tl, _, err := Unmerged(TextEncoder, g.clipCfg.WeightShapes(), loras, Options{})
			if err != nil {
				t.Fatal(err)
			}
			tw := nn.NewWeights(g.backend, g.clipSrc, nn.Widen).WithLoRAs(tl)
			golden.AssertClose(t, file+" unmerged text_encoder_merged_last_hidden_state", g.runTextEncoderWeights(t, tw), g.clipWant, 1e-4)
			if unused := tw.UnusedLoRAs(); len(unused) > 0 {
				t.Errorf("text encoder LoRAs no layer applied: %v", unused)
			}
		})
	}
}
