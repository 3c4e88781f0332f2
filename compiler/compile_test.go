package compiler

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler/checkpoint"
	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

var bucket64 = []artifacts.Bucket{{Width: 64, Height: 64, Batch: 1}}

func compileTo(t *testing.T, opts Options) (*artifacts.Bundle, *Result) {
	t.Helper()
	if opts.Out == "" {
		opts.Out = filepath.Join(t.TempDir(), "bundle")
	}
	if opts.Buckets == nil {
		opts.Buckets = bucket64
	}
	res, err := Compile(opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := artifacts.Open(opts.Out, artifacts.Options{})
	if err != nil {
		t.Fatalf("compiled bundle does not verify: %v", err)
	}
	return b, res
}

// The manifest lists every component and the traced programs; the bundle
// verifies. (internal/e2e generates images from compiled bundles.)
func TestCompileDiffusersFolder(t *testing.T) {
	for _, dtype := range []string{artifacts.DTypeFloat32, artifacts.DTypeFloat16} {
		_, res := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), DType: dtype})
		if len(res.Manifest.Components) != 4 || res.Manifest.DType != dtype {
			t.Fatalf("manifest: %+v", res.Manifest)
		}
		for _, c := range res.Manifest.Components {
			if c.Tensors == 0 {
				t.Errorf("component %s: %+v", c.Name, c)
			}
		}
		if len(res.Manifest.Programs) == 0 {
			t.Errorf("no programs traced")
		}
	}
}

// The single-file fp16 checkpoint and ControlNet compile to a bundle whose
// UNet + ControlNet step matches diffusers within fp16 tolerance.
func TestCompileSingleFiles(t *testing.T) {
	b, res := compileTo(t, Options{
		Model:       golden.Path(t, "tiny-sd15-single-file-fp16.safetensors"),
		ControlNets: []string{golden.Path(t, "tiny-controlnet-single-file-fp16.safetensors")},
		Checkpoint:  checkpoint.Options{ConfigDir: golden.Path(t, "tiny-sd15")},
	})
	if res.Stats["unet"].Overflow != 0 {
		t.Errorf("overflow in a checkpoint that was fp16 already: %+v", res.Stats["unet"])
	}
	// Run the step program on the bundle's weights with the golden inputs.
	ref := golden.Open(t, "controlnet_unet_ref.safetensors")
	in := func(name string) *tensors.Tensor {
		v, shape, err := ref.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		return tensors.FromFlatDataAndDimensions(v, shape...)
	}
	sample, ctx, cond := in("sample"), in("encoder_hidden_states"), in("controlnet_cond")
	backend, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) (unet.Config, nn.Source) {
		c, err := b.Component(name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(b.Path(c.Config))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := unet.ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Open(b.Path(c.Weights))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return cfg, nn.FileSource{File: f}
	}
	ucfg, usrc := load("unet")
	ccfg, csrc := load("controlnet.0")
	u, _ := unet.NewUNet(ucfg)
	cn, _ := unet.NewControlNet(ccfg)
	sd := sample.Shape().Dimensions
	sh := unet.StepShape{Batch: sd[0], LatentHeight: sd[2], LatentWidth: sd[3], SeqLen: ctx.Shape().Dimensions[1],
		CondScale: cond.Shape().Dimensions[2] / sd[2], NumControlNet: 1}
	p, err := unet.CompileStep("step", u, nn.NewWeights(backend, usrc, nn.Widen), []*unet.ControlNet{cn},
		[]*nn.Weights{nn.NewWeights(backend, csrc, nn.Widen)}, sh)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rows := make([][]float32, sd[0])
	for i := range rows {
		rows[i] = unet.UniformScales(ucfg.NumSkips(), 1)
	}
	out, err := p.Run(sample, tensors.FromScalar(float32(500)), ctx, cond, tensors.FromValue(rows))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := golden.Float32s(t, "controlnet_unet_ref.safetensors", "unet_t500_scale1p0_with_residuals")
	golden.AssertClose(t, "single-file fp16 bundle step", tensors.MustCopyFlatData[float32](out[0]), want, 1e-2)
}

// Explicit ControlNets replace the folder's, all of them kept in order.
func TestCompileExplicitControlNets(t *testing.T) {
	_, res := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"),
		ControlNets: []string{golden.Path(t, "tiny-sd15", "controlnet"), golden.Path(t, "tiny-sd15", "controlnet2")}})
	var names []string
	for _, c := range res.Manifest.Components {
		if c.Kind == artifacts.KindControlNet {
			names = append(names, c.Name)
		}
	}
	if !slices.Equal(names, []string{"controlnet.0", "controlnet.1"}) {
		t.Errorf("ControlNet components %v, want controlnet.0 and controlnet.1", names)
	}
}

// LoRAs in both formats merge into an fp32 bundle whose UNet matches the
// golden merged UNet.
func TestCompileWithLoRA(t *testing.T) {
	want, _ := golden.Float32s(t, "lora_ref.safetensors", "unet_merged_t500")
	for _, file := range []string{"lora_kohya.safetensors", "lora_peft.safetensors"} {
		b, res := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), DType: artifacts.DTypeFloat32,
			LoRAs: []LoRASpec{{Path: golden.Path(t, file), Scale: 0.75}}})
		if len(res.Manifest.LoRAs) != 1 || res.Manifest.LoRAs[0].Scale != 0.75 {
			t.Errorf("manifest LoRAs: %+v", res.Manifest.LoRAs)
		}
		golden.AssertClose(t, file+" merged into the bundle", runBundleUNet(t, b, false), want, 1e-4)
	}
}

// runBundleUNet runs a bundle's UNet (no ControlNet) at t=500 on the golden
// sample and prompt embeddings, optionally rounded to fp16 first.
func runBundleUNet(t *testing.T, b *artifacts.Bundle, roundInputs bool) []float32 {
	t.Helper()
	c, err := b.Component("unet")
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(b.Path(c.Weights))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfgData, err := os.ReadFile(b.Path(c.Config))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := unet.ParseConfig(cfgData)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := unet.NewUNet(cfg)
	backend, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	ref := golden.Open(t, "controlnet_unet_ref.safetensors")
	load := func(name string) *tensors.Tensor {
		v, shape, err := ref.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		if roundInputs {
			for i, x := range v {
				v[i] = safetensors.HalfToFloat32(safetensors.Float32ToHalf(x))
			}
		}
		return tensors.FromFlatDataAndDimensions(v, shape...)
	}
	sample, ctx := load("sample"), load("encoder_hidden_states")
	p, err := nn.Compile("unet", nn.NewWeights(backend, nn.FileSource{File: f}, nn.Widen),
		[]shapes.Shape{sample.Shape(), shapes.Make(ctx.DType()), ctx.Shape()},
		func(s nn.Scope, x []*Node) []*Node {
			return []*Node{nn.NHWCToNCHW(u.Forward(s, nn.NCHWToNHWC(x[0]), x[1], x[2], nil))}
		})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out, err := p.Run(sample, tensors.FromScalar(float32(500)), ctx)
	if err != nil {
		t.Fatal(err)
	}
	return tensors.MustCopyFlatData[float32](out[0])
}

// An fp16 bundle's UNet computes what diffusers computes on fp16-rounded
// weights and inputs (golden fp16_ref): the cast is the only change.
func TestCompileFP16MatchesRoundedReference(t *testing.T) {
	b, _ := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15")})
	want, _ := golden.Float32s(t, "fp16_ref.safetensors", "unet_t500_fp16_rounded_weights_inputs")
	golden.AssertClose(t, "fp16 bundle UNet vs fp16_ref", runBundleUNet(t, b, true), want, 1e-4)
}

// Bad input: an error naming the problem, and nothing at the output path.
func TestCompileRefusals(t *testing.T) {
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.safetensors")
	data, err := os.ReadFile(golden.Path(t, "tiny-controlnet-single-file-fp16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"pickle checkpoint", Options{Model: filepath.Join(dir, "model.ckpt")}, "ckpt"},
		{"truncated ControlNet", Options{Model: golden.Path(t, "tiny-sd15"), ControlNets: []string{truncated}}, "truncated"},
		{"LoRA for another model", Options{Model: golden.Path(t, "tiny-sd15"),
			LoRAs: []LoRASpec{{Path: golden.Path(t, "tiny-controlnet-single-file-fp16.safetensors"), Scale: 1}}}, "lora"},
		{"no buckets", Options{Model: golden.Path(t, "tiny-sd15"), Buckets: []artifacts.Bucket{}}, "bucket"},
		{"bad dtype", Options{Model: golden.Path(t, "tiny-sd15"), DType: "int8"}, "dtype"},
	}
	for _, c := range cases {
		out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		c.opts.Out = out
		if c.opts.Buckets == nil {
			c.opts.Buckets = bucket64
		}
		if c.name == "pickle checkpoint" {
			os.WriteFile(c.opts.Model, []byte("PK"), 0o644)
		}
		_, err := Compile(c.opts)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
		if _, statErr := os.Stat(out); !errors.Is(statErr, os.ErrNotExist) {
			t.Errorf("%s: something was left at %s", c.name, out)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
}

// An existing bundle is refused before any conversion work and left
// untouched; Overwrite replaces it.
func TestCompileExistingBundle(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bundle")
	compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), Out: out})
	before, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A model path that does not exist shows the refusal comes first.
	_, err = Compile(Options{Model: filepath.Join(t.TempDir(), "missing"), Out: out, Buckets: bucket64})
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("compile over an existing bundle: %v, want ErrExist", err)
	}
	after, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil || string(after) != string(before) {
		t.Fatalf("existing bundle changed (err %v)", err)
	}
	compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), Out: out, Overwrite: true, DType: artifacts.DTypeFloat32})
	m, err := artifacts.Open(out, artifacts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Manifest.DType != artifacts.DTypeFloat32 {
		t.Errorf("overwritten bundle has dtype %s", m.Manifest.DType)
	}
}
