package checkpoint

import (
	"path/filepath"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
	"github.com/gomlx/gomlx/core/tensors"
)

// fp16Tol is the absolute tolerance for networks run on weights rounded to
// fp16 against float32 references (golden README, fp16_ref).
const fp16Tol = 1e-2

func assertFP16Close(t *testing.T, name string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	diff, scale := golden.MaxAbsDiff(got, want)
	if !(diff <= fp16Tol) {
		t.Errorf("%s: max |diff| %.3g > %g (max |ref| %.3g)", name, diff, fp16Tol, scale)
		return
	}
	t.Logf("%s: max |diff| %.3g (max |ref| %.3g, tolerance %g)", name, diff, scale, fp16Tol)
}

func refTensor(t *testing.T, file, name string) *tensors.Tensor {
	t.Helper()
	v, shape := golden.Float32s(t, file, name)
	return tensors.FromFlatDataAndDimensions(v, shape...)
}

// The UNet and ControlNet built from the single files (fp16 weights
// widened) reproduce diffusers' float32 step within fp16 tolerance, and
// read every weight the sources serve.
func TestSingleFileStepParity(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	m, err := OpenModel(goldenPath(t, singleFile), Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := OpenControlNet(goldenPath(t, controlNetFile), Options{Hints: UNetHints(m.UNetConfig)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	b, err := nn.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	u, err := unet.NewUNet(m.UNetConfig)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := unet.NewControlNet(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	uw := nn.NewWeights(b, m.UNet.Source, nn.Widen)
	cw := nn.NewWeights(b, c.Source, nn.Widen)

	const ref = "controlnet_unet_ref.safetensors"
	sample := refTensor(t, ref, "sample")
	ctx := refTensor(t, ref, "encoder_hidden_states")
	cond := refTensor(t, ref, "controlnet_cond")
	ts := mustOpen(t, goldenPath(t, ref))
	steps, _, err := ts.Int64s("timestep_t500")
	if err != nil {
		t.Fatal(err)
	}
	s, cs := sample.Shape().Dimensions, cond.Shape().Dimensions
	sh := unet.StepShape{Batch: s[0], LatentHeight: s[2], LatentWidth: s[3], SeqLen: ctx.Shape().Dimensions[1], CondScale: cs[2] / s[2], NumControlNet: 1}
	p, err := unet.CompileStep("step", u, uw, []*unet.ControlNet{cn}, []*nn.Weights{cw}, sh)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rows := make([][]float32, sh.Batch)
	for i := range rows {
		rows[i] = unet.UniformScales(cn.Config.NumSkips(), 1)
	}
	out, err := p.Run(sample, tensors.FromScalar(float32(steps[0])), ctx, cond, tensors.FromValue(rows))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := golden.Float32s(t, ref, "unet_t500_scale1p0_with_residuals")
	assertFP16Close(t, "unet_t500_scale1p0_with_residuals", tensors.MustCopyFlatData[float32](out[0]), want)

	for _, x := range []struct {
		w   *nn.Weights
		src *Source
	}{{uw, m.UNet.Source}, {cw, c.Source}} {
		used := x.w.Used()
		for _, n := range x.src.Names() {
			if !used[n] {
				t.Errorf("%s weight %s unused by the graph", x.src.component, n)
			}
		}
	}
}

// The text encoder and VAE decoder from the single file, likewise.
func TestSingleFileTextAndVAEParity(t *testing.T) {
	tiny := goldenPath(t, "tiny-sd15")
	m, err := OpenModel(goldenPath(t, singleFile), Options{Hints: tinyHints, TokenizerDir: filepath.Join(tiny, "tokenizer")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b, err := nn.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}

	cm, err := clip.New(m.TextEncoderConfig)
	if err != nil {
		t.Fatal(err)
	}
	ids, dims, err := mustOpen(t, goldenPath(t, "text_encoder_ref.safetensors")).Int64s("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := clip.NewEncoder(cm, nn.NewWeights(b, m.TextEncoder.Source, nn.Widen), dims[0], dims[1], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	ids32 := make([]int32, len(ids))
	for i, id := range ids {
		ids32[i] = int32(id)
	}
	got, err := enc.Encode(ids32)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := golden.Float32s(t, "text_encoder_ref.safetensors", "last_hidden_state")
	assertFP16Close(t, "text encoder last_hidden_state", got, want)

	vm, err := vae.New(m.VAEConfig)
	if err != nil {
		t.Fatal(err)
	}
	latents := refTensor(t, "vae_ref.safetensors", "latents")
	ld := latents.Shape().Dimensions
	p, err := vm.CompileDecoder(nn.NewWeights(b, m.VAE.Source, nn.Widen), ld[0], ld[2], ld[3], vae.DecodeOptions{FromDiffusion: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, err := p.Run(latents)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = golden.Float32s(t, "vae_ref.safetensors", "decoded")
	assertFP16Close(t, "vae decoded", tensors.MustCopyFlatData[float32](out[0]), want)
}
