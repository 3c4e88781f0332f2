package interp_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/hlo"
	"github.com/controlfn/controlfn/kernels/hlo/internal/interp"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// These tests are the proof the package exists for: each program the
// pipeline ships is traced on the StableHLO export backend (the same
// model functions and options the pipeline uses), its text is run here
// with the golden checkpoint's weights, and the result must match the
// diffusers reference to the tolerance the Go-backend parity tests use.

const parityTol = 1e-4 // max |diff| ≤ 1e-4 · max(1, max |ref|), as in kernels/*_test.go

// exported is a traced program with, for each weight parameter, the
// source holding it.
type exported struct {
	prog    *nn.Program
	sources []nn.Source // one per prog.Bindings() entry
}

// run parses the program's StableHLO and runs it on inputs followed by
// its weights, each read with nn.Arrange in its binding's layout.
func (e exported) run(t *testing.T, inputs ...interp.Tensor) []interp.Tensor {
	t.Helper()
	text, ok := e.prog.StableHLO()
	if !ok {
		t.Fatalf("%s: not traced on the StableHLO backend", e.prog.Name())
	}
	return e.runText(t, text, inputs...)
}

// runText is run on a given text of the program (a mutated one).
func (e exported) runText(t *testing.T, text []byte, inputs ...interp.Tensor) []interp.Tensor {
	t.Helper()
	start := time.Now()
	m, err := interp.Parse(text)
	if err != nil {
		t.Fatalf("%s: %v", e.prog.Name(), err)
	}
	parsed := time.Since(start)
	binds := e.prog.Bindings()
	if len(binds) != len(e.sources) {
		t.Fatalf("%s: %d bindings, %d sources", e.prog.Name(), len(binds), len(e.sources))
	}
	args := slices.Clone(inputs)
	for i, b := range binds {
		dt, shape, raw, err := nn.Arrange(e.sources[i], b.Name, b.Layout)
		if err != nil {
			t.Fatal(err)
		}
		vals, err := safetensors.DecodeFloat32(raw, dt)
		if err != nil {
			t.Fatalf("%s: %v", b.Name, err)
		}
		kind := map[safetensors.DType]interp.DType{safetensors.F32: interp.F32, safetensors.F16: interp.F16, safetensors.BF16: interp.BF16}[dt]
		args = append(args, interp.NewF32(kind, vals, shape...))
	}
	start = time.Now()
	outs, err := m.Run(args)
	if err != nil {
		t.Fatalf("%s: %v", e.prog.Name(), err)
	}
	t.Logf("%s: %d bytes of StableHLO, %d weights; parse %v, run %v", e.prog.Name(), len(text), len(binds),
		parsed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return outs
}

// all repeats one source for every binding of a single-model program.
func all(p *nn.Program, src nn.Source) exported {
	return exported{prog: p, sources: slices.Repeat([]nn.Source{src}, len(p.Bindings()))}
}

func modelSource(t *testing.T, folder, file string) nn.FileSource {
	return nn.FileSource{File: golden.Open(t, "tiny-sd15", folder, file)}
}

func f32(t *testing.T, file, name string) interp.Tensor {
	t.Helper()
	v, dims := golden.Float32s(t, file, name)
	return interp.NewF32(interp.F32, v, dims...)
}

// The fused ControlNet + UNet denoising step (unet.CompileStep, as the
// pipeline compiles it) matches diffusers' UNet fed ControlNet residuals,
// for both golden timesteps and both conditioning scales' extremes.
func TestGoldenStep(t *testing.T) {
	const ref = "controlnet_unet_ref.safetensors"
	b := hlo.New()
	ucfg, err := unet.LoadConfig(golden.Path(t, "tiny-sd15", "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := unet.LoadConfig(golden.Path(t, "tiny-sd15", "controlnet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	um, err := unet.NewUNet(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := unet.NewControlNet(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	usrc := modelSource(t, "unet", "diffusion_pytorch_model.safetensors")
	csrc := modelSource(t, "controlnet", "diffusion_pytorch_model.safetensors")
	uw, cw := nn.NewWeights(b, usrc, nn.Widen), nn.NewWeights(b, csrc, nn.Widen)

	sample, ctx, cond := f32(t, ref, "sample"), f32(t, ref, "encoder_hidden_states"), f32(t, ref, "controlnet_cond")
	sh := unet.StepShape{Batch: sample.Dims[0], LatentHeight: sample.Dims[2], LatentWidth: sample.Dims[3],
		SeqLen: ctx.Dims[1], CondScale: cond.Dims[2] / sample.Dims[2], NumControlNet: 1}
	name := fmt.Sprintf("step_b%d_%dx%d_cn1", sh.Batch, sh.LatentHeight, sh.LatentWidth)
	step, err := unet.CompileStep(name, um, uw, []*unet.ControlNet{cm}, []*nn.Weights{cw}, sh)
	if err != nil {
		t.Fatal(err)
	}

	// The ControlNet (a UNet copy) shares most weight names with the
	// UNet: each binding says which of CompileStep's weight sets (UNet
	// first, then the ControlNets) it comes from.
	models := []nn.Source{usrc, csrc}
	var sources []nn.Source
	counts := map[int]int{}
	for _, b := range step.Bindings() {
		sources = append(sources, models[b.Model])
		counts[b.Model]++
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("bindings per model %v: want both the UNet's and the ControlNet's", counts)
	}
	e := exported{prog: step, sources: sources}

	its, _, err := golden.Open(t, ref).Int64s("timestep_t500")
	if err != nil {
		t.Fatal(err)
	}
	timesteps := map[string]float32{"t500": float32(its[0]), "t946_42": f32(t, ref, "timestep_t946_42").F32[0]}
	for _, c := range []struct {
		ts    string
		scale float32
		tag   string
	}{{"t500", 1, "scale1p0"}, {"t946_42", 0.5, "scale0p5"}} {
		var scales []float32
		for range sh.Batch {
			scales = append(scales, unet.UniformScales(cm.Config.NumSkips(), c.scale)...)
		}
		out := e.run(t, sample, interp.NewF32(interp.F32, []float32{timesteps[c.ts]}),
			ctx, cond, interp.NewF32(interp.F32, scales, sh.Batch, cm.Config.NumSkips()+1))
		want := "unet_" + c.ts + "_" + c.tag + "_with_residuals"
		wantV, wantDims := golden.Float32s(t, ref, want)
		if !slices.Equal(out[0].Dims, wantDims) {
			t.Fatalf("%s: shape %v, want %v", want, out[0].Dims, wantDims)
		}
		golden.AssertClose(t, want, out[0].F32, wantV, parityTol)
	}
}

// The VAE decoder the pipeline ships (diffusion latents in, postprocessed
// NHWC image out) and the raw decoder (diffusers' vae.decode) match the
// reference.
func TestGoldenVAEDecoder(t *testing.T) {
	const ref = "vae_ref.safetensors"
	cfg, err := vae.LoadConfig(golden.Path(t, "tiny-sd15", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := vae.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := modelSource(t, "vae", "diffusion_pytorch_model.safetensors")
	w := nn.NewWeights(hlo.New(), src, nn.Widen)
	latents := f32(t, ref, "latents")
	ld := latents.Dims

	t.Run("shipped", func(t *testing.T) {
		p, err := m.CompileDecoder(w, ld[0], ld[2], ld[3], vae.DecodeOptions{FromDiffusion: true, Postprocess: true, ChannelsLast: true})
		if err != nil {
			t.Fatal(err)
		}
		out := all(p, src).run(t, latents)
		post, pd := golden.Float32s(t, ref, "decoded_postprocessed")
		want, wd := nchwToNHWC(post, pd)
		if !slices.Equal(out[0].Dims, wd) {
			t.Fatalf("shape %v, want NHWC %v", out[0].Dims, wd)
		}
		golden.AssertClose(t, "decoded_postprocessed (NHWC)", out[0].F32, want, parityTol)
	})
	t.Run("raw", func(t *testing.T) {
		p, err := m.CompileDecoder(w, ld[0], ld[2], ld[3], vae.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		z := interp.NewF32(interp.F32, slices.Clone(latents.F32), ld...)
		for i := range z.F32 {
			z.F32[i] /= float32(cfg.ScalingFactor)
		}
		out := all(p, src).run(t, z)
		want, wd := golden.Float32s(t, ref, "decoded")
		if !slices.Equal(out[0].Dims, wd) {
			t.Fatalf("shape %v, want %v", out[0].Dims, wd)
		}
		golden.AssertClose(t, "decoded", out[0].F32, want, parityTol)
	})
}

func nchwToNHWC(x []float32, d []int) ([]float32, []int) {
	n, c, h, w := d[0], d[1], d[2], d[3]
	out := make([]float32, len(x))
	for b := range n {
		for ch := range c {
			for y := range h {
				for xx := range w {
					out[((b*h+y)*w+xx)*c+ch] = x[((b*c+ch)*h+y)*w+xx]
				}
			}
		}
	}
	return out, []int{n, h, w, c}
}

// The text encoder program (clip.NewEncoder: int32 ids in, prompt
// embeddings out) matches last_hidden_state for every golden prompt.
func TestGoldenTextEncoder(t *testing.T) {
	const ref = "text_encoder_ref.safetensors"
	cfg, err := clip.LoadConfig(golden.Path(t, "tiny-sd15", "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := clip.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ids, dims, err := golden.Open(t, ref).Int64s("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	src := modelSource(t, "text_encoder", "model.safetensors")
	enc, err := clip.NewEncoder(m, nn.NewWeights(hlo.New(), src, nn.Widen), dims[0], dims[1], 0)
	if err != nil {
		t.Fatal(err)
	}
	// The program takes int32 ids, as the pipeline feeds them.
	e := all(enc.Program(), src)
	in := interp.NewInts(interp.I32, ids, dims...)
	out := e.run(t, in)
	want, _ := golden.Float32s(t, ref, "last_hidden_state")
	golden.AssertClose(t, "last_hidden_state", out[0].F32, want, parityTol)

	// The comparison is not vacuous: one attribute of one op changed (the
	// causal mask letting each token see itself masked too) is caught.
	text, _ := enc.Program().StableHLO()
	const gt, ge = "comparison_direction GT>", "comparison_direction GE>"
	if bytes.Count(text, []byte(gt)) != 1 {
		t.Fatalf("expected one causal-mask compare in the text")
	}
	bad := e.runText(t, bytes.Replace(text, []byte(gt), []byte(ge), 1), in)
	if diff, scale := golden.MaxAbsDiff(bad[0].F32, want); diff <= parityTol*max(1, scale) {
		t.Errorf("a mutated mask still matches the reference (max |diff| %.3g)", diff)
	} else {
		t.Logf("mutated mask: max |diff| %.3g, caught", diff)
	}
}

// half serves a source's float32 weights rounded to fp16, as a bundle
// stores them.
type half struct{ nn.FileSource }

func (h half) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	dt, shape, raw, err := h.FileSource.Tensor(name)
	if err != nil {
		return "", nil, nil, err
	}
	vals, err := safetensors.DecodeFloat32(raw, dt)
	if err != nil {
		return "", nil, nil, err
	}
	out := make([]byte, 2*len(vals))
	for i, v := range vals {
		h := safetensors.Float32ToHalf(v)
		out[2*i], out[2*i+1] = byte(h), byte(h>>8)
	}
	return safetensors.F16, shape, out, nil
}

// With nn.KeepStored (what the compiler traces for bundles) weights are
// fp16 parameters converted to f32 inside the program. On fp16-rounded
// weights and inputs the UNet must match the golden fp32 run on the same
// rounded values: this checks the converts and the fp16 parameter types.
func TestGoldenKeepStoredFP16(t *testing.T) {
	const ref = "controlnet_unet_ref.safetensors"
	cfg, err := unet.LoadConfig(golden.Path(t, "tiny-sd15", "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	um, err := unet.NewUNet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := half{modelSource(t, "unet", "diffusion_pytorch_model.safetensors")}
	sample, ctx := f32(t, ref, "sample"), f32(t, ref, "encoder_hidden_states")
	in := []shapes.Shape{shapes.Make(dtypes.Float32, sample.Dims...), shapes.Make(dtypes.Float32), shapes.Make(dtypes.Float32, ctx.Dims...)}
	p, err := nn.Compile("unet_fp16", nn.NewWeights(hlo.New(), src, nn.KeepStored), in, func(s nn.Scope, x []*graph.Node) []*graph.Node {
		return []*graph.Node{nn.NHWCToNCHW(um.Forward(s, nn.NCHWToNHWC(x[0]), x[1], x[2], nil))}
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := interp.Parse(func() []byte { b, _ := p.StableHLO(); return b }())
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range m.Inputs()[len(in):] {
		if w.DType != interp.F16 {
			t.Fatalf("weight parameter %d (%s) is %s, want f16", i, p.Bindings()[i].Name, w.DType)
		}
	}
	for _, x := range []*interp.Tensor{&sample, &ctx} {
		for i, v := range x.F32 {
			x.F32[i] = safetensors.HalfToFloat32(safetensors.Float32ToHalf(v))
		}
	}
	out := all(p, src).run(t, sample, interp.NewF32(interp.F32, []float32{500}), ctx)
	want, _ := golden.Float32s(t, "fp16_ref.safetensors", "unet_t500_fp16_rounded_weights_inputs")
	golden.AssertClose(t, "unet_t500_fp16_rounded_weights_inputs", out[0].F32, want, parityTol)
}
