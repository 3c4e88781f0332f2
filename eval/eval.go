package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler"
	"github.com/controlfn/controlfn/compiler/checkpoint"
	"github.com/controlfn/controlfn/compiler/demomodel"
	"github.com/controlfn/controlfn/compiler/lora"
	"github.com/controlfn/controlfn/eval/metrics"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/internal/memlimit"
	"github.com/controlfn/controlfn/kernels/imageproc"
	"github.com/controlfn/controlfn/kernels/nn"
)

// Config is one evaluation. DefaultConfig gives the standard settings;
// Run uses every value as given except where a field says otherwise.
type Config struct {
	// Model is a diffusers folder or single-file checkpoint, as compile
	// takes it; empty writes the built-in demo model to a temporary folder
	// (and, with no LoRAs given, the demo LoRA at DemoLoRAScale).
	Model       string
	ControlNets []string
	LoRAs       []compiler.LoRASpec
	// Checkpoint carries the tokenizer and config folders a single-file
	// checkpoint needs.
	Checkpoint checkpoint.Options
	// ClampOverflow saturates weights beyond fp16's range in the optimized
	// bundle instead of refusing them, as compile --clamp-overflow does.
	ClampOverflow bool

	// Prompts are the prompts to generate; nil uses DefaultPrompts.
	Prompts        []string
	NegativePrompt string
	// Controls are the control maps at Width×Height; nil draws the
	// built-in ones.
	Controls []Control
	// Seeds: every prompt × control is generated once per seed.
	Seeds []uint64

	Width, Height     int
	Steps             int
	GuidanceScale     float64
	Scheduler         string
	ConditioningScale float64

	// CannyLow and CannyHigh make the edge map of a generated image;
	// EdgeTolerance is the F1 match radius in pixels (0: exact).
	CannyLow, CannyHigh int
	EdgeTolerance       int
	// SSIM configures SSIM and MS-SSIM (zero value: Wang et al.'s).
	SSIM metrics.SSIMOptions

	// Backend is the compute backend spec (nn.NewBackend): "go" (also
	// when empty), or "xla:cuda" in a -tags xla build.
	Backend string
	// WorkDir is where the temporary model and bundles go (default: the
	// system temporary folder); they are removed when Run returns.
	WorkDir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// DefaultConfig is the standard evaluation: all built-in prompts and
// control maps, seed 1, 512×512, 20 DDIM steps, guidance 7.5, Canny 100/200
// (the thresholds Canny ControlNets were trained with), a 1-pixel F1
// tolerance.
func DefaultConfig() Config {
	return Config{
		Seeds: []uint64{1}, Width: 512, Height: 512, Steps: 20, GuidanceScale: 7.5, Scheduler: "ddim",
		ConditioningScale: 1, CannyLow: 100, CannyHigh: 200, EdgeTolerance: 1, Backend: "go",
	}
}

// DemoSize and DemoSteps are the defaults Command uses with the built-in
// demo model, whose latent is 8×8 at 64×64.
const (
	DemoSize  = 64
	DemoSteps = 4
)

func (c *Config) validate() error {
	switch {
	case c.Width <= 0 || c.Height <= 0 || c.Width%8 != 0 || c.Height%8 != 0:
		return fmt.Errorf("eval: size %dx%d: want positive multiples of 8", c.Width, c.Height)
	case c.Steps < 1:
		return fmt.Errorf("eval: %d steps: want at least 1", c.Steps)
	case len(c.Seeds) == 0:
		return errors.New("eval: no seeds")
	case len(slices.Compact(slices.Sorted(slices.Values(c.Seeds)))) != len(c.Seeds):
		return errors.New("eval: a seed is repeated")
	case c.Prompts != nil && len(c.Prompts) == 0:
		return errors.New("eval: an empty prompt list")
	case c.Controls != nil && len(c.Controls) == 0:
		return errors.New("eval: an empty control list")
	case c.EdgeTolerance < 0 || c.EdgeTolerance > metrics.MaxEdgeTolerance:
		return fmt.Errorf("eval: edge tolerance %d out of range [0, %d]", c.EdgeTolerance, metrics.MaxEdgeTolerance)
	case c.CannyLow < 0 || c.CannyHigh < 0:
		return fmt.Errorf("eval: Canny thresholds %d, %d must not be negative", c.CannyLow, c.CannyHigh)
	case math.IsNaN(c.GuidanceScale) || math.IsInf(c.GuidanceScale, 0) || math.IsNaN(c.ConditioningScale) || math.IsInf(c.ConditioningScale, 0):
		return errors.New("eval: guidance and conditioning scales must be finite")
	case c.Scheduler == "":
		return errors.New("eval: no scheduler")
	}
	// Refuse a setting or size the metrics cannot take before any
	// generation is paid for.
	o, err := c.SSIM.Resolved()
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	if metrics.MSSSIMScales(c.Width, c.Height, o.WindowSize) == 0 {
		return fmt.Errorf("eval: size %dx%d is smaller than the %d-pixel SSIM window", c.Width, c.Height, o.WindowSize)
	}
	seen := map[string]bool{}
	for i, ctl := range c.Controls {
		switch {
		case ctl.Map == nil || ctl.Map.Width != c.Width || ctl.Map.Height != c.Height || len(ctl.Map.Pix) != 3*c.Width*c.Height:
			return fmt.Errorf("eval: control %d (%s): not a %dx%d RGB map", i, ctl.Name, c.Width, c.Height)
		case seen[ctl.Name]:
			return fmt.Errorf("eval: two control maps named %q", ctl.Name)
		}
		seen[ctl.Name] = true
	}
	return nil
}

// job is one sample to generate with both configurations.
type job struct {
	prompt, control int
	seed            uint64
}

// output is what one generation leaves for the metrics.
type output struct {
	image   *imageproc.RGB
	latents []float32
}

// Run compiles the model twice (optimized fp16 and reference fp32), runs
// every prompt × control × seed on both and measures them. The bundles,
// and the demo model when one was written, live in a temporary folder
// that is removed before Run returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Prompts == nil {
		cfg.Prompts = DefaultPrompts()
	}
	if cfg.Controls == nil {
		var err error
		if cfg.Controls, err = BuiltinControls(cfg.Width, cfg.Height); err != nil {
			return nil, err
		}
	}
	if cfg.Backend == "" {
		cfg.Backend = "go"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}

	work, err := os.MkdirTemp(cfg.WorkDir, "controlfn-eval-*")
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer os.RemoveAll(work)

	r := &Report{Version: ReportVersion, Created: time.Now().UTC(), Prompts: cfg.Prompts}
	r.Model = ModelInfo{Path: cfg.Model, ControlNets: cfg.ControlNets}
	loras := cfg.LoRAs
	if cfg.Model == "" {
		r.Model.Demo = true
		cfg.Model = filepath.Join(work, "demo-model")
		logf("writing the built-in demo model")
		if err := demomodel.Write(cfg.Model); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if len(loras) == 0 {
			path := filepath.Join(work, "demo-lora.safetensors")
			if err := writeDemoLoRA(path, cfg.Model); err != nil {
				return nil, fmt.Errorf("eval: %w", err)
			}
			loras = []compiler.LoRASpec{{Path: path, Scale: DemoLoRAScale}}
			r.Model.LoRAs = append(r.Model.LoRAs, LoRAInfo{File: filepath.Base(path), Scale: DemoLoRAScale, Demo: true})
		}
	}
	if len(r.Model.LoRAs) == 0 {
		for _, l := range loras {
			r.Model.LoRAs = append(r.Model.LoRAs, LoRAInfo{File: l.Path, Scale: l.Scale})
		}
	}
	merged, unmerged := "LoRA merged", "LoRA applied unmerged (W·x + s·up·(down·x) in the graph, as PEFT runs it)"
	if len(loras) == 0 {
		merged, unmerged = "no LoRA", "no LoRA"
	}
	r.Optimized = Variant{Description: "fp16 bundle, " + merged + " (what compile ships)", DType: artifacts.DTypeFloat16}
	r.Reference = Variant{Description: "fp32 bundle of the base weights, " + unmerged, DType: artifacts.DTypeFloat32}

	var jobs []job
	for p := range cfg.Prompts {
		for c := range cfg.Controls {
			for _, s := range cfg.Seeds {
				jobs = append(jobs, job{p, c, s})
			}
		}
	}
	controlPNGs := make([][]byte, len(cfg.Controls))
	for i, c := range cfg.Controls {
		if controlPNGs[i], err = encodePNG(c.Map); err != nil {
			return nil, fmt.Errorf("eval: control %s: %w", c.Name, err)
		}
	}

	// One configuration at a time: a full-size model in fp32 and fp16 at
	// once would double the memory the evaluation needs.
	outs := map[string][]output{}
	for _, v := range []*Variant{&r.Optimized, &r.Reference} {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		dir := filepath.Join(work, "bundle-"+v.DType)
		logf("compiling the %s bundle", v.DType)
		t0 := time.Now()
		// The reference keeps the base weights: its LoRAs are applied at
		// run time, unmerged.
		merge, unmerged := loras, []compiler.LoRASpec(nil)
		if v == &r.Reference {
			merge, unmerged = nil, loras
		}
		res, err := compiler.Compile(compiler.Options{
			Model: cfg.Model, ControlNets: cfg.ControlNets, LoRAs: merge, Out: dir, DType: v.DType,
			Buckets:       []artifacts.Bucket{{Width: cfg.Width, Height: cfg.Height, Batch: 1}},
			ClampOverflow: cfg.ClampOverflow && v.DType == artifacts.DTypeFloat16, Checkpoint: cfg.Checkpoint,
		})
		if err != nil {
			return nil, fmt.Errorf("eval: %s bundle: %w", v.DType, err)
		}
		v.CompileSeconds = Float(time.Since(t0).Seconds())
		v.BuildID, v.LoRAs = res.Manifest.BuildID.String(), len(res.Manifest.LoRAs)+len(unmerged)
		if v.DType == artifacts.DTypeFloat16 {
			for _, s := range res.Stats {
				v.FP16Overflow += s.Overflow
				v.FP16Underflow += s.Underflow
			}
		}
		for _, w := range res.Warnings {
			logf("warning: %s", w)
		}
		o, err := generateAll(ctx, dir, cfg, jobs, controlPNGs, unmerged, v, logf)
		if err != nil {
			return nil, fmt.Errorf("eval: %s: %w", v.DType, err)
		}
		outs[v.DType] = o
	}

	if err := r.measure(cfg, jobs, outs[artifacts.DTypeFloat16], outs[artifacts.DTypeFloat32]); err != nil {
		return nil, err
	}
	return r, nil
}

// generateAll loads one bundle and runs every job on it, with loras
// applied unmerged.
func generateAll(ctx context.Context, dir string, cfg Config, jobs []job, controls [][]byte, loras []compiler.LoRASpec, v *Variant, logf func(string, ...any)) (_ []output, err error) {
	t0 := time.Now()
	b, err := artifacts.Open(dir, artifacts.Options{Verify: artifacts.VerifyFull})
	if err != nil {
		return nil, err
	}
	comps, err := pipeline.LoadBundle(b)
	if err != nil {
		return nil, err
	}
	defer comps.Close()
	backend, err := nn.NewBackend(cfg.Backend)
	if err != nil {
		return nil, err
	}
	defer backend.Finalize()
	opts := pipeline.Options{Backend: backend, Buckets: []pipeline.Bucket{{Width: cfg.Width, Height: cfg.Height, NumImages: 1}}}
	if len(loras) > 0 {
		closeLoRAs, err := unmergedLoRAs(comps, loras, &opts)
		if err != nil {
			return nil, err
		}
		defer closeLoRAs()
	}
	p, err := pipeline.New(comps, opts)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	// Pace the collector above the loaded weights, as the service does.
	pacer := memlimit.Pace(0)
	defer pacer.Stop()
	defer pacer.Reserve(p.WorkingMemory(cfg.Width, cfg.Height, 1))()
	v.LoadSeconds = Float(time.Since(t0).Seconds())

	out := make([]output, len(jobs))
	var total time.Duration
	for i, j := range jobs {
		// Every ControlNet of the bundle gets the same map: the evaluation
		// measures one kind of control at a time.
		ctrls := make([]pipeline.Control, len(comps.ControlNets))
		for k := range ctrls {
			ctrls[k] = pipeline.Control{Image: controls[j.control], Scale: cfg.ConditioningScale, GuidanceEnd: 1}
		}
		t := time.Now()
		res, err := p.Generate(ctx, pipeline.Request{
			Prompt: cfg.Prompts[j.prompt], NegativePrompt: cfg.NegativePrompt, Controls: ctrls,
			Width: cfg.Width, Height: cfg.Height, Steps: cfg.Steps, GuidanceScale: cfg.GuidanceScale,
			Scheduler: cfg.Scheduler, Seed: j.seed, NumImages: 1,
		})
		if err != nil {
			return nil, fmt.Errorf("prompt %d, control %s, seed %d: %w", j.prompt, cfg.Controls[j.control].Name, j.seed, err)
		}
		total += time.Since(t)
		if len(res.Pixels) != 3*cfg.Width*cfg.Height {
			return nil, fmt.Errorf("generation returned %d pixel bytes for %dx%d", len(res.Pixels), cfg.Width, cfg.Height)
		}
		out[i] = output{
			image:   &imageproc.RGB{Width: cfg.Width, Height: cfg.Height, Pix: res.Pixels},
			latents: res.Latents,
		}
		logf("%s: %d/%d generated", v.DType, i+1, len(jobs))
	}
	v.GenerateSeconds = Float(total.Seconds() / float64(len(jobs)))
	return out, nil
}

// edgeMap is the set of edge pixels of a control map.
func edgeMap(m *imageproc.RGB) (*imageproc.Gray, error) {
	g, err := imageproc.ToGray(m)
	if err != nil {
		return nil, err
	}
	return metrics.Binarize(g, metrics.EdgeThreshold)
}

// cannyMap is Canny of an image's grey, the edges a generation drew.
func cannyMap(m *imageproc.RGB, low, high int) (*imageproc.Gray, error) {
	g, err := imageproc.ToGray(m)
	if err != nil {
		return nil, err
	}
	return imageproc.Canny(g, low, high)
}

// measure fills the settings, controls, samples and summary.
func (r *Report) measure(cfg Config, jobs []job, opt, ref []output) error {
	if len(opt) != len(jobs) || len(ref) != len(jobs) {
		return errors.New("eval: generations missing")
	}
	o, err := cfg.SSIM.Resolved()
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	scales := metrics.MSSSIMScales(cfg.Width, cfg.Height, o.WindowSize)
	r.Settings = Settings{
		Width: cfg.Width, Height: cfg.Height, Steps: cfg.Steps, Seeds: cfg.Seeds, GuidanceScale: cfg.GuidanceScale,
		Scheduler: cfg.Scheduler, NegativePrompt: cfg.NegativePrompt, ConditioningScale: cfg.ConditioningScale,
		Backend: cfg.Backend, CannyLow: cfg.CannyLow, CannyHigh: cfg.CannyHigh,
		EdgeTolerance: cfg.EdgeTolerance, EdgeThreshold: metrics.EdgeThreshold,
		SSIM: o.String(), MSSSIMScales: scales,
	}
	if scales < metrics.MaxScales {
		r.Settings.MSSSIMNote = fmt.Sprintf("%dx%d is too small for %d scales with the %d-pixel window (the coarsest would be %d px); %d scales were used, their weights renormalized to sum to 1.",
			cfg.Width, cfg.Height, metrics.MaxScales, o.WindowSize, min(cfg.Width, cfg.Height)>>(metrics.MaxScales-1), scales)
	}

	targets := make([]*imageproc.Gray, len(cfg.Controls))
	for i, c := range cfg.Controls {
		if targets[i], err = edgeMap(c.Map); err != nil {
			return fmt.Errorf("eval: control %s: %w", c.Name, err)
		}
		n := 0
		for _, v := range targets[i].Pix {
			if v != 0 {
				n++
			}
		}
		r.Controls = append(r.Controls, ControlInfo{Name: c.Name, Source: c.Source, EdgePixels: n,
			EdgeDensity: Float(float64(n) / float64(len(targets[i].Pix)))})
	}

	for i, j := range jobs {
		a, b := ref[i], opt[i]
		s := Sample{
			ID:     fmt.Sprintf("p%d-%s-s%d", j.prompt, cfg.Controls[j.control].Name, j.seed),
			Prompt: j.prompt, Control: cfg.Controls[j.control].Name, Seed: j.seed,
		}
		psnr, err := metrics.PSNR(a.image, b.image)
		if err != nil {
			return fmt.Errorf("eval: sample %s: %w", s.ID, err)
		}
		ssim, err := metrics.SSIM(a.image, b.image, cfg.SSIM)
		if err != nil {
			return fmt.Errorf("eval: sample %s: %w", s.ID, err)
		}
		ms, err := metrics.MSSSIM(a.image, b.image, cfg.SSIM)
		if err != nil {
			return fmt.Errorf("eval: sample %s: %w", s.ID, err)
		}
		d, err := metrics.AbsDiff(a.latents, b.latents)
		if err != nil {
			return fmt.Errorf("eval: sample %s latents: %w", s.ID, err)
		}
		r.Settings.MSSSIMWeights = ms.Weights
		s.PSNR, s.SSIM, s.MSSSIM = Float(psnr), Float(ssim), Float(ms.Value)
		s.LatentMaxAbsDiff, s.LatentMeanAbsDiff, s.LatentRefMaxAbs = Float(d.Max), Float(d.Mean), Float(d.RefMaxAbs)
		for _, e := range []struct {
			img *imageproc.RGB
			dst *metrics.EdgeScore
		}{{b.image, &s.EdgeOptimized}, {a.image, &s.EdgeReference}} {
			pred, err := cannyMap(e.img, cfg.CannyLow, cfg.CannyHigh)
			if err != nil {
				return fmt.Errorf("eval: sample %s: %w", s.ID, err)
			}
			if *e.dst, err = metrics.EdgeF1(pred, targets[j.control], cfg.EdgeTolerance); err != nil {
				return fmt.Errorf("eval: sample %s: %w", s.ID, err)
			}
		}
		s.F1Delta = Float(s.EdgeOptimized.F1 - s.EdgeReference.F1)
		r.Samples = append(r.Samples, s)
		r.rows = append(r.rows, gridRow{control: cfg.Controls[j.control].Map, reference: a.image, optimized: b.image})
	}
	r.summarize()
	return nil
}

// unmergedLoRAs opens the LoRA files and sets them on opts to be applied
// unmerged to the UNet and the text encoder, checked against the bundle's
// configs exactly as the compiler's merge checks them. The returned func
// closes the files.
func unmergedLoRAs(comps *pipeline.Components, specs []compiler.LoRASpec, opts *pipeline.Options) (func(), error) {
	var files []*lora.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	var applied []lora.Applied
	for _, s := range specs {
		f, err := lora.Load(s.Path, lora.Options{})
		if err != nil {
			closeAll()
			return nil, err
		}
		files = append(files, f)
		applied = append(applied, lora.Applied{File: f, Scale: s.Scale})
	}
	has := func(c lora.Component) bool {
		for _, a := range applied {
			if len(a.File.For(c)) > 0 {
				return true
			}
		}
		return false
	}
	if has(lora.UNet) {
		l, _, err := lora.Unmerged(lora.UNet, comps.UNet.Config.WeightShapes(false), applied, lora.Options{})
		if err != nil {
			closeAll()
			return nil, err
		}
		opts.UNetLoRAs = &l
	}
	if has(lora.TextEncoder) {
		l, _, err := lora.Unmerged(lora.TextEncoder, comps.TextEncoder.Config.WeightShapes(), applied, lora.Options{})
		if err != nil {
			closeAll()
			return nil, err
		}
		opts.TextEncoderLoRAs = &l
	}
	return closeAll, nil
}
