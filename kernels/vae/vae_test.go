package vae

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// fixture is the golden VAE: its config, checkpoint and reference tensors.
// Nothing about the architecture is assumed here, so the same tests check
// a golden set made with another config.
type fixture struct {
	model *Model
	ckpt  *safetensors.File
	ref   *safetensors.File
}

func loadFixture(t *testing.T) fixture {
	t.Helper()
	cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := golden.Open(t, "tiny-sd15", "vae", "diffusion_pytorch_model.safetensors")
	ref := golden.Open(t, "vae_ref.safetensors")
	return fixture{model: m, ckpt: ckpt, ref: ref}
}

func newBackendWeights(t *testing.T, src nn.Source) *nn.Weights {
	t.Helper()
	b, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	return nn.NewWeights(b, src, nn.Widen)
}

func (f fixture) weights(t *testing.T) *nn.Weights {
	return newBackendWeights(t, nn.FileSource{File: f.ckpt})
}

func (f fixture) tensor(t *testing.T, name string) ([]float32, []int) {
	t.Helper()
	data, dims, err := f.ref.Float32s(name)
	if err != nil {
		t.Fatalf("reference %s: %v", name, err)
	}
	return data, dims
}

func run(t *testing.T, p *nn.Program, data []float32, dims []int) []*tensors.Tensor {
	t.Helper()
	outs, err := p.Run(tensors.FromFlatDataAndDimensions(data, dims...))
	if err != nil {
		t.Fatal(err)
	}
	return outs
}

// expectClose applies the project's parity rule:
// max |got - want| <= 1e-4 · max(1, max |want|).
func expectClose(t *testing.T, what string, got *tensors.Tensor, want []float32, wantDims []int) {
	t.Helper()
	if fmt.Sprint(got.Shape().Dimensions) != fmt.Sprint(wantDims) {
		t.Errorf("%s: shape %v, want %v", what, got.Shape().Dimensions, wantDims)
		return
	}
	g := tensors.MustCopyFlatData[float32](got)
	var maxRef, maxDiff float64
	worst := 0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		if d := math.Abs(float64(g[i]) - float64(want[i])); d > maxDiff || math.IsNaN(d) {
			maxDiff, worst = d, i
		}
	}
	tol := 1e-4 * math.Max(1, maxRef)
	if !(maxDiff <= tol) {
		t.Errorf("%s: max |diff| %.3g at %d (got %g, want %g) > tol %.3g", what, maxDiff, worst, g[worst], want[worst], tol)
	} else {
		t.Logf("%s: max |diff| %.3g (tol %.3g)", what, maxDiff, tol)
	}
}

// nchwToNHWC reorders a flat NCHW array.
func nchwToNHWC(x []float32, dims []int) ([]float32, []int) {
	n, c, h, w := dims[0], dims[1], dims[2], dims[3]
	out := make([]float32, len(x))
	for b := 0; b < n; b++ {
		for ch := 0; ch < c; ch++ {
			for y := 0; y < h; y++ {
				for xx := 0; xx < w; xx++ {
					out[((b*h+y)*w+xx)*c+ch] = x[((b*c+ch)*h+y)*w+xx]
				}
			}
		}
	}
	return out, []int{n, h, w, c}
}

func TestDecodeParity(t *testing.T) {
	f := loadFixture(t)
	w := f.weights(t)
	latents, ldims := f.tensor(t, "latents")
	decoded, ddims := f.tensor(t, "decoded")
	post, pdims := f.tensor(t, "decoded_postprocessed")
	scale := float32(f.model.Config().ScalingFactor)
	fac := f.model.Config().DownscaleFactor()
	if ddims[2] != ldims[2]*fac || ddims[3] != ldims[3]*fac {
		t.Fatalf("reference image %v is not %d× the latents %v", ddims, fac, ldims)
	}

	t.Run("vae.decode", func(t *testing.T) {
		// The caller divides by scaling_factor, as around diffusers' decode.
		z := make([]float32, len(latents))
		for i, v := range latents {
			z[i] = v / scale
		}
		p, err := f.model.CompileDecoder(w, ldims[0], ldims[2], ldims[3], DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		expectClose(t, "decoded", run(t, p, z, ldims)[0], decoded, ddims)
	})

	t.Run("DecodeLatents and Postprocess in a caller's graph", func(t *testing.T) {
		in := shapes.Make(dtypes.Float32, ldims...)
		p, err := nn.Compile("decode_latents", w, []shapes.Shape{in}, func(s nn.Scope, x []*graph.Node) []*graph.Node {
			img := f.model.DecodeLatents(s, x[0])
			return []*graph.Node{img, Postprocess(img)}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		outs := run(t, p, latents, ldims)
		expectClose(t, "decoded", outs[0], decoded, ddims)
		expectClose(t, "decoded_postprocessed", outs[1], post, pdims)
	})
}

func TestEncodeParity(t *testing.T) {
	f := loadFixture(t)
	w := f.weights(t)
	image, idims := f.tensor(t, "image")
	mean, mdims := f.tensor(t, "encoder_mean")
	logvar, lvdims := f.tensor(t, "encoder_logvar")
	std, sdims := f.tensor(t, "encoder_std")

	p, err := f.model.CompileEncoder(w, idims[0], idims[2], idims[3])
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	outs := run(t, p, image, idims)
	if len(outs) != 2 {
		t.Fatalf("encoder returned %d outputs, want mean and logvar", len(outs))
	}
	expectClose(t, "encoder_mean", outs[0], mean, mdims)
	expectClose(t, "encoder_logvar", outs[1], logvar, lvdims)
	lv := tensors.MustCopyFlatData[float32](outs[1])
	s := make([]float32, len(lv))
	for i, v := range lv {
		s[i] = float32(math.Exp(0.5 * float64(v)))
	}
	expectClose(t, "encoder_std", tensors.FromFlatDataAndDimensions(s, outs[1].Shape().Dimensions...), std, sdims)
}

// Every checkpoint tensor must feed the decoder or the encoder: one left
// over means part of the model was not built.
func TestAllWeightsUsed(t *testing.T) {
	f := loadFixture(t)
	src := nn.FileSource{File: f.ckpt}
	w := newBackendWeights(t, src)
	fac := f.model.Config().DownscaleFactor()
	dec, err := f.model.CompileDecoder(w, 1, 2, 2, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dec.Close()
	enc, err := f.model.CompileEncoder(w, 1, 2*fac, 2*fac)
	if err != nil {
		t.Fatal(err)
	}
	enc.Close()
	used := w.Used()
	var unused []string
	for _, n := range src.Names() {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	if len(unused) > 0 {
		t.Errorf("%d of %d checkpoint tensors unused: %v", len(unused), len(src.Names()), unused)
	}
	if len(used) != len(src.Names()) {
		t.Errorf("used %d names, checkpoint has %d", len(used), len(src.Names()))
	}
}

// A batch is decoded row by row independently (GroupNorm and attention do
// not mix rows); the program options are checked on the way.
func TestDecodeBatchOptions(t *testing.T) {
	f := loadFixture(t)
	w := f.weights(t)
	latents, ldims := f.tensor(t, "latents")
	post, pdims := f.tensor(t, "decoded_postprocessed")
	// Row(s) of the reference first, then different data (a scaled flip)
	// that must not leak into them.
	n := len(latents)
	two := make([]float32, 2*n)
	copy(two, latents)
	for i, v := range latents {
		two[2*n-1-i] = -0.5 * v
	}
	dims := append([]int{2 * ldims[0]}, ldims[1:]...)
	p, err := f.model.CompileDecoder(w, dims[0], ldims[2], ldims[3],
		DecodeOptions{FromDiffusion: true, Postprocess: true, ChannelsLast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out := run(t, p, two, dims)[0]
	od := out.Shape().Dimensions
	if od[0] != dims[0] || od[1] != pdims[2] || od[2] != pdims[3] || od[3] != pdims[1] {
		t.Fatalf("output shape %v, want NHWC [%d %d %d %d]", od, dims[0], pdims[2], pdims[3], pdims[1])
	}
	want, wdims := nchwToNHWC(post, pdims)
	flat := tensors.MustCopyFlatData[float32](out)
	expectClose(t, "decoded_postprocessed, NHWC, reference rows of the batch",
		tensors.FromFlatDataAndDimensions(flat[:len(want)], wdims...), want, wdims)
	for i, v := range flat {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("postprocessed value %g at %d outside [0, 1]", v, i)
		}
	}
}

// renamed serves a source under other names: old maps a name the model asks
// for to the stored one.
type renamed struct {
	nn.FileSource
	old func(string) string
}

func (r renamed) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	return r.FileSource.Tensor(r.old(name))
}

func (r renamed) Has(name string) bool { return r.FileSource.Has(r.old(name)) }

// VAE files saved before diffusers renamed its attention (SD1.x repos) name
// the projections query/key/value/proj_attn.
func TestLegacyAttentionNames(t *testing.T) {
	f := loadFixture(t)
	if !f.model.Config().MidBlockAddAttention {
		t.Skip("config has no mid-block attention")
	}
	legacy := strings.NewReplacer("attentions.0.query.", "attentions.0.to_q.",
		"attentions.0.key.", "attentions.0.to_k.", "attentions.0.value.", "attentions.0.to_v.",
		"attentions.0.proj_attn.", "attentions.0.to_out.0.")
	src := renamed{FileSource: nn.FileSource{File: f.ckpt}, old: func(n string) string {
		if strings.Contains(n, ".to_") {
			return "" // only the legacy names exist in this view
		}
		return legacy.Replace(n)
	}}
	w := newBackendWeights(t, src)
	latents, ldims := f.tensor(t, "latents")
	decoded, ddims := f.tensor(t, "decoded")
	p, err := f.model.CompileDecoder(w, ldims[0], ldims[2], ldims[3], DecodeOptions{FromDiffusion: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	expectClose(t, "decoded from legacy names", run(t, p, latents, ldims)[0], decoded, ddims)
	var attn []string
	for n := range w.Used() {
		if strings.Contains(n, "attentions") && !strings.Contains(n, "group_norm") {
			attn = append(attn, n)
		}
	}
	sort.Strings(attn)
	if len(attn) != 8 || !strings.HasSuffix(attn[0], "key.bias") {
		t.Errorf("attention weights bound: %v", attn)
	}
}

// A config that disagrees with the checkpoint fails at compile time with an
// error naming the layer, not with a panic or garbage.
func TestConfigCheckpointMismatch(t *testing.T) {
	f := loadFixture(t)
	cfg := f.model.Config()
	cfg.LayersPerBlock++
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := f.weights(t)
	_, err = m.CompileDecoder(w, 1, 2, 2, DecodeOptions{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("resnets.%d", cfg.LayersPerBlock)) {
		t.Errorf("decoder with layers_per_block+1: error %v, want one naming the missing resnet", err)
	}

	cfg = f.model.Config()
	cfg.LatentChannels++
	if m, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err = m.CompileDecoder(w, 1, 2, 2, DecodeOptions{}); err == nil || !strings.Contains(err.Error(), "post_quant_conv") && !strings.Contains(err.Error(), "conv_in") {
		t.Errorf("decoder with latent_channels+1: error %v, want one naming the first conv", err)
	}

	cfg = f.model.Config()
	cfg.BlockOutChannels = append([]int(nil), cfg.BlockOutChannels...)
	cfg.BlockOutChannels[0] *= 2
	if m, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err = m.CompileEncoder(w, 1, 16, 16); err == nil || !strings.Contains(err.Error(), "encoder.conv_in") {
		t.Errorf("encoder with block_out_channels[0]*2: error %v, want one naming encoder.conv_in", err)
	}
}

func TestBadInputShapes(t *testing.T) {
	f := loadFixture(t)
	w := f.weights(t)
	c := f.model.Config()
	in := shapes.Make(dtypes.Float32, 1, c.LatentChannels+1, 2, 2)
	_, err := nn.Compile("bad", w, []shapes.Shape{in}, func(s nn.Scope, x []*graph.Node) []*graph.Node {
		return []*graph.Node{f.model.Decode(s, x[0])}
	})
	if err == nil || !strings.Contains(err.Error(), "latents") {
		t.Errorf("decode of %d-channel latents: error %v", c.LatentChannels+1, err)
	}
	if _, err := f.model.CompileEncoder(w, 0, 8, 8); err == nil {
		t.Error("encoder with batch 0 compiled")
	}
	if _, err := f.model.CompileDecoder(w, 1, 0, 8, DecodeOptions{}); err == nil {
		t.Error("decoder with height 0 compiled")
	}
}

func TestActivations(t *testing.T) {
	b, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	xs := []float32{-25, -3, -1, -0.25, 0, 0.5, 1, 2.5, 30}
	ref := map[string]func(float64) float64{
		"silu":  func(x float64) float64 { return x / (1 + math.Exp(-x)) },
		"swish": func(x float64) float64 { return x / (1 + math.Exp(-x)) },
		"gelu":  func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) },
		"relu":  func(x float64) float64 { return math.Max(x, 0) },
		"mish":  func(x float64) float64 { return x * math.Tanh(math.Log1p(math.Exp(x))) },
	}
	for name, fn := range ref {
		e := graph.MustNewExec(b, func(x *graph.Node) *graph.Node { return activation(name, x) })
		out := tensors.MustCopyFlatData[float32](e.MustExec(xs)[0])
		for i, x := range xs {
			want := fn(float64(x))
			if d := math.Abs(float64(out[i]) - want); d > 1e-5*math.Max(1, math.Abs(want)) {
				t.Errorf("%s(%g) = %g, want %g", name, x, out[i], want)
			}
		}
	}
}
