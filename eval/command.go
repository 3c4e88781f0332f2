package eval

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/controlfn/controlfn/compiler"
	"github.com/controlfn/controlfn/compiler/checkpoint"
	"github.com/controlfn/controlfn/eval/metrics"
	"github.com/controlfn/controlfn/internal/cliflag"
)

const usageText = `usage: controlfn eval --out DIR [flags]

Generates every prompt × control map × seed with the optimized bundle (fp16,
LoRAs merged, as compile ships it) and with a reference (fp32 base weights,
LoRAs applied unmerged at run time) under the same seeds, and reports fidelity (PSNR, SSIM, MS-SSIM, latent differences) and
control accuracy (edge F1 of Canny of each image against the control map) as
report.md, report.json and grid.png in --out.

Without --model, the built-in demo model and a demo LoRA are used (64x64,
4 steps unless --size / --steps say otherwise).

Examples:
  controlfn eval --out out/eval
  controlfn eval --model ./stable-diffusion-v1-5 --controlnet ./control_v11p_sd15_canny \
      --lora style.safetensors:0.8 --controls ./edges --seeds 1,2 --out out/eval

Flags:
`

// Command is `controlfn eval`: it parses args, runs the evaluation and
// writes the report. Progress and usage go to stderr, the summary and the
// files written to stdout.
func Command(args []string) error {
	return command(args, os.Stdout, os.Stderr)
}

func command(args []string, stdout, stderr io.Writer) error {
	def := DefaultConfig()
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("model", "", "checkpoint: a diffusers folder or a single-file .safetensors (default: the built-in demo model)")
	var controlNets, loras cliflag.List
	fs.Var(&controlNets, "controlnet", "ControlNet folder or control_*.safetensors (repeatable; default: the model folder's)")
	// A LoRA path may contain a comma, so --lora is repeatable only.
	fs.Func("lora", "LoRA FILE[:SCALE]: merged into the optimized bundle, applied unmerged in the reference (repeatable; scale default 1)", func(v string) error {
		loras = append(loras, v)
		return nil
	})
	tok := fs.String("tokenizer", "", "CLIP tokenizer folder (a single-file checkpoint needs it)")
	configDir := fs.String("config-dir", "", "diffusers folder whose configs describe a single-file checkpoint")
	clamp := fs.Bool("clamp-overflow", false, "saturate weights beyond the fp16 range instead of refusing them")
	promptsFile := fs.String("prompts", "", "file of prompts, one per line (default: a built-in set of 4)")
	negative := fs.String("negative-prompt", "", "negative prompt for every generation")
	controlsDir := fs.String("controls", "", "folder of PNG control maps (white edges on black) to add to the built-in ones")
	maps := fs.String("maps", strings.Join(BuiltinNames(), ","), "built-in control maps to use, comma-separated, or none")
	size := fs.String("size", "", "image size WxH (default 512x512; 64x64 with the demo model)")
	steps := fs.Int("steps", 0, "num_inference_steps (default 20; 4 with the demo model)")
	seeds := fs.String("seeds", "1", "seeds, comma-separated: every prompt × control runs once per seed")
	guidance := fs.Float64("guidance-scale", def.GuidanceScale, "classifier-free guidance scale")
	scheduler := fs.String("scheduler", def.Scheduler, "ddim, pndm, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc")
	condScale := fs.Float64("controlnet-conditioning-scale", def.ConditioningScale, "ControlNet conditioning scale")
	cannyLow := fs.Int("canny-low", def.CannyLow, "Canny low threshold for the edges of generated images")
	cannyHigh := fs.Int("canny-high", def.CannyHigh, "Canny high threshold")
	tolerance := fs.Int("edge-tolerance", def.EdgeTolerance, "edge F1 match radius in pixels (0: exact)")
	luma := fs.Bool("ssim-luma", false, "compute SSIM and MS-SSIM on BT.601 luma instead of per RGB channel")
	backend := fs.String("backend", def.Backend, "compute backend: go, or xla:cuda in a -tags xla build")
	out := fs.String("out", "", "folder to write report.md, report.json and grid.png into")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		fs.Usage()
		return errors.New("--out is required")
	}

	cfg := def
	cfg.Model, cfg.ControlNets, cfg.ClampOverflow = *model, controlNets, *clamp
	cfg.Checkpoint = checkpoint.Options{TokenizerDir: *tok, ConfigDir: *configDir}
	cfg.NegativePrompt, cfg.GuidanceScale, cfg.Scheduler = *negative, *guidance, *scheduler
	cfg.ConditioningScale, cfg.CannyLow, cfg.CannyHigh, cfg.EdgeTolerance = *condScale, *cannyLow, *cannyHigh, *tolerance
	cfg.Backend, cfg.Log = *backend, stderr
	if *luma {
		cfg.SSIM.Channels = metrics.Luma
	}
	for _, spec := range loras {
		l, err := cliflag.ParseLoRA(spec)
		if err != nil {
			return err
		}
		cfg.LoRAs = append(cfg.LoRAs, compiler.LoRASpec{Path: l.Path, Scale: l.Scale})
	}
	if *model == "" {
		cfg.Width, cfg.Height, cfg.Steps = DemoSize, DemoSize, DemoSteps
	}
	if *size != "" {
		sizes, err := cliflag.ParseSizes(*size)
		if err != nil {
			return err
		}
		if len(sizes) != 1 {
			return fmt.Errorf("--size %q: give one size", *size)
		}
		cfg.Width, cfg.Height = sizes[0].Width, sizes[0].Height
	}
	if *steps != 0 {
		cfg.Steps = *steps
	}
	var err error
	if cfg.Seeds, err = ParseSeeds(*seeds); err != nil {
		return err
	}
	if *promptsFile != "" {
		if cfg.Prompts, err = ReadPrompts(*promptsFile); err != nil {
			return err
		}
	}
	cfg.Controls = []Control{}
	if *maps != "none" && *maps != "" {
		var names cliflag.List
		_ = names.Set(*maps) // Set never fails
		builtin, err := BuiltinControls(cfg.Width, cfg.Height, names...)
		if err != nil {
			return err
		}
		cfg.Controls = append(cfg.Controls, builtin...)
	}
	if *controlsDir != "" {
		user, err := LoadControls(*controlsDir, cfg.Width, cfg.Height)
		if err != nil {
			return err
		}
		cfg.Controls = append(cfg.Controls, user...)
	}
	if len(cfg.Controls) == 0 {
		return errors.New("no control maps: --maps none needs --controls DIR")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	r, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := r.Write(*out); err != nil {
		return err
	}
	s := r.Summary
	fmt.Fprintf(stdout, "%d samples in %s: PSNR min %s / mean %s dB, SSIM min %.6f, MS-SSIM min %.6f (%d scales), latent max |Δ| %.3g\n",
		s.Samples, time.Since(t0).Round(time.Millisecond), fmtDB(s.PSNRMin), fmtDB(s.PSNRMean), s.SSIMMin, s.MSSSIMMin, r.Settings.MSSSIMScales, s.LatentMaxAbsDiff)
	fmt.Fprintf(stdout, "edge F1 (tolerance %d px): optimized %.4f, reference %.4f, max |Δ| %.4f\n",
		r.Settings.EdgeTolerance, s.F1Optimized, s.F1Reference, s.F1DeltaMaxAbs)
	for _, name := range []string{ReportMarkdown, ReportJSON, GridPNG} {
		fmt.Fprintln(stdout, filepath.Join(*out, name))
	}
	return nil
}

// ParseSeeds reads a comma-separated list of unsigned seeds.
func ParseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--seeds %q: %q is not an unsigned integer", s, f)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("--seeds %q: seed %d repeated", s, v)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--seeds %q: no seeds", s)
	}
	return out, nil
}
