package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler/demomodel"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/internal/cliflag"
	"github.com/controlfn/controlfn/internal/memlimit"
	"github.com/controlfn/controlfn/kernels/imageproc"
	"github.com/controlfn/controlfn/kernels/nn"
)

func runDemoModel(args []string) error {
	fs := flag.NewFlagSet("demo-model", flag.ContinueOnError)
	out := fs.String("out", "", "folder to create (must not exist)")
	configs := fs.String("configs", "", "make a random-weight model of these configs instead (unet/, controlnet/, vae/, text_encoder/, scheduler/; e.g. ../shared/sd15-configs)")
	tok := fs.String("tokenizer", "", "with --configs: the tokenizer folder to copy (default: the built-in small vocabulary, whose ids fit any CLIP text encoder)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn demo-model --out DIR [--configs DIR --tokenizer DIR]\n\nWrites the built-in tiny random-weight SD1.5-architecture pipeline with a ControlNet\n(diffusers layout, own tokenizer, and a control image %s).\n\n", demomodel.ControlImageName)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return errors.New("--out is required")
	}
	if *configs != "" {
		if err := demomodel.WriteFromConfigs(*out, *configs, *tok); err != nil {
			return err
		}
	} else if err := demomodel.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote demo model to %s\n", *out)
	return nil
}

func runGenerate(args []string) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	bundle := fs.String("bundle", "", "compiled bundle folder (controlfn compile)")
	model := fs.String("model", "", "or: a diffusers model folder, used without compiling")
	var controlNets, controlImages cliflag.List
	fs.Var(&controlNets, "controlnet", "ControlNet folder (repeatable; default: MODEL/controlnet)")
	fs.Var(&controlImages, "control-image", "control image file, one per ControlNet (repeatable)")
	prompt := fs.String("prompt", "", "prompt")
	negative := fs.String("negative-prompt", "", "negative prompt")
	controlType := fs.String("control-type", "none", "canny: run Canny on the image first; none: the image is the control map")
	cannyLow := fs.Int("canny-low", 100, "Canny low threshold")
	cannyHigh := fs.Int("canny-high", 200, "Canny high threshold")
	scale := fs.Float64("controlnet-conditioning-scale", 1.0, "ControlNet conditioning scale (all ControlNets)")
	gStart := fs.Float64("control-guidance-start", 0, "fraction of steps before ControlNets apply")
	gEnd := fs.Float64("control-guidance-end", 1, "fraction of steps after which ControlNets stop")
	guess := fs.Bool("guess-mode", false, "guess mode (ControlNets see only the conditional batch)")
	width := fs.Int("width", 0, "width in pixels (default: the control image's)")
	height := fs.Int("height", 0, "height in pixels (default: the control image's)")
	steps := fs.Int("steps", 20, "num_inference_steps (1-150)")
	guidance := fs.Float64("guidance-scale", 7.5, "classifier-free guidance scale (<=1 disables it)")
	sched := fs.String("scheduler", "ddim", "ddim, pndm, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc")
	seed := fs.Uint64("seed", 0, "seed of the torch-compatible CPU generator (0: from the clock)")
	numImages := fs.Int("num-images", 1, "images per prompt")
	out := fs.String("out", "out.png", "output file (.png or .jpg); several images get -N suffixes and a -grid file")
	backendSpec := fs.String("backend", "go", "compute backend: go, or xla:cuda in a -tags xla build")
	fp32 := fs.Bool("fp32-weights", false, "widen weights to fp32 on the device (twice the weight memory; as serve --fp32-weights)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn generate --bundle DIR --prompt TEXT --control-image FILE --out FILE [flags]\n\nExample:\n  controlfn generate --bundle out/demo/bundle --prompt \"a red cube\" --control-image out/demo/model/control.png --steps 4 --out out/demo.png\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*model == "") == (*bundle == "") || len(controlImages) == 0 {
		fs.Usage()
		return errors.New("one of --bundle or --model, and --control-image, are required")
	}
	backend, err := nn.NewBackend(*backendSpec)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var comps *pipeline.Components
	if *bundle != "" {
		b, err := artifacts.Open(*bundle, artifacts.Options{Verify: artifacts.VerifyFull})
		if err != nil {
			return err
		}
		comps, err = pipeline.LoadBundle(b)
		if err != nil {
			return err
		}
	} else if comps, err = pipeline.LoadDiffusers(*model, controlNets...); err != nil {
		return err
	}
	defer comps.Close()
	if len(controlImages) != len(comps.ControlNets) {
		return fmt.Errorf("%d control images for %d ControlNets", len(controlImages), len(comps.ControlNets))
	}
	req := pipeline.Request{
		Prompt: *prompt, NegativePrompt: *negative, GuessMode: *guess,
		Width: *width, Height: *height, Steps: *steps, GuidanceScale: *guidance,
		Scheduler: *sched, Seed: *seed, NumImages: *numImages, Format: pipeline.PNG,
	}
	if req.Seed == 0 {
		req.Seed = uint64(time.Now().UnixNano())
	}
	if ext := strings.ToLower(filepath.Ext(*out)); ext == ".jpg" || ext == ".jpeg" {
		req.Format, req.Quality = pipeline.JPEG, pipeline.DefaultJPEGQuality
	}
	for _, path := range controlImages {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		req.Controls = append(req.Controls, pipeline.Control{
			Image: data, Canny: *controlType == "canny", CannyLow: *cannyLow, CannyHigh: *cannyHigh,
			Scale: *scale, GuidanceStart: *gStart, GuidanceEnd: *gEnd,
		})
	}
	if req.Width == 0 || req.Height == 0 {
		cfg, err := imageproc.DecodeConfig(req.Controls[0].Image, imageproc.DefaultMaxPixels)
		if err != nil {
			return fmt.Errorf("control image: %w", err)
		}
		req.Width, req.Height = cfg.Width/8*8, cfg.Height/8*8
	}
	// Weights stay as stored on the device unless asked otherwise, as in
	// serve and lambda.
	precision := nn.KeepStored
	if *fp32 {
		precision = nn.Widen
	}
	p, err := pipeline.New(comps, pipeline.Options{Backend: backend, Precision: precision,
		Buckets: []pipeline.Bucket{{Width: req.Width, Height: req.Height, NumImages: req.NumImages}}})
	if err != nil {
		return err
	}
	defer p.Close()
	// Pace the collector above the loaded weights, as the service does.
	pacer := memlimit.Pace(0)
	defer pacer.Stop()
	defer pacer.Reserve(p.WorkingMemory(req.Width, req.Height, req.NumImages))()
	load := time.Since(t0)
	bar := newProgress(os.Stderr, "denoise", req.Steps)
	req.OnStep = func(step int, _ float64, _ []float32) { bar.Set(step + 1) }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := p.Generate(ctx, req)
	bar.Done()
	if err != nil {
		return err
	}
	written, err := writeImages(*out, res)
	if err != nil {
		return err
	}
	tm := res.Timings
	fmt.Fprintf(os.Stderr, "seed %d: load+compile %s, text %s, control %s, denoise %s (%d steps), vae %s, encode %s\n",
		res.Seed, load.Round(time.Millisecond), tm.TextEncode.Round(time.Millisecond), tm.ControlPrep.Round(time.Millisecond),
		tm.Denoise.Round(time.Millisecond), len(tm.Steps), tm.VAEDecode.Round(time.Millisecond), tm.Encode.Round(time.Millisecond))
	for _, w := range written {
		fmt.Println(w)
	}
	return nil
}

// writeImages writes the result's images (and grid) next to out, each via a
// temp file and rename.
func writeImages(out string, res *pipeline.Result) ([]string, error) {
	ext := filepath.Ext(out)
	base := strings.TrimSuffix(out, ext)
	var written []string
	write := func(path string, data []byte) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		written = append(written, path)
		return nil
	}
	for i, img := range res.Images {
		path := out
		if len(res.Images) > 1 {
			path = fmt.Sprintf("%s-%d%s", base, i, ext)
		}
		if err := write(path, img); err != nil {
			return written, err
		}
	}
	if res.Grid != nil {
		if err := write(base+"-grid"+ext, res.Grid); err != nil {
			return written, err
		}
	}
	return written, nil
}
