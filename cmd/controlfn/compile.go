package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler"
	"github.com/controlfn/controlfn/compiler/checkpoint"
	"github.com/controlfn/controlfn/internal/cliflag"
)

const compileExamples = `Examples:
  controlfn compile --model ./stable-diffusion-v1-5 --controlnet ./control_v11p_sd15_canny \
      --size 512x512,768x512 --out ./bundle
  controlfn compile --model v1-5-pruned-emaonly.safetensors --tokenizer ./tokenizer \
      --controlnet control_v11p_sd15_canny.safetensors --lora style.safetensors:0.8 --out ./bundle
`

func runCompile(args []string) error {
	fs := flag.NewFlagSet("compile", flag.ContinueOnError)
	model := fs.String("model", "", "checkpoint: a diffusers folder or a single-file .safetensors")
	var controlNets, loras cliflag.List
	fs.Var(&controlNets, "controlnet", "ControlNet folder or control_*.safetensors (repeatable or comma-separated; default: the model folder's)")
	fs.Var(&loras, "lora", "LoRA file[:SCALE] (repeatable; scale default 1)")
	sizes := fs.String("size", "512x512", "shape buckets WxH, comma-separated")
	batch := fs.Int("batch", 1, "images per request the buckets are compiled for")
	out := fs.String("out", "", "bundle folder to create")
	overwrite := fs.Bool("overwrite", false, "replace an existing bundle at --out")
	dtype := fs.String("dtype", artifacts.DTypeFloat16, "stored weight dtype: float16 or float32")
	clamp := fs.Bool("clamp-overflow", false, "saturate weights beyond the fp16 range instead of refusing them")
	lenient := fs.Bool("lora-lenient", false, "warn about LoRA keys that match no weight instead of failing")
	tok := fs.String("tokenizer", "", "CLIP tokenizer folder (needed for a single-file checkpoint)")
	configDir := fs.String("config-dir", "", "diffusers folder whose configs describe a single-file checkpoint")
	variant := fs.String("variant", "", "diffusers weight variant, e.g. fp16")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn compile --model PATH --out BUNDLE [flags]\n\n%s\nFlags:\n", compileExamples)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" || *out == "" {
		fs.Usage()
		return errors.New("--model and --out are required")
	}
	buckets, err := parseBuckets(*sizes, *batch)
	if err != nil {
		return err
	}
	opts := compiler.Options{
		Model: *model, ControlNets: controlNets, Out: *out, Overwrite: *overwrite, Buckets: buckets,
		DType: *dtype, ClampOverflow: *clamp, LoRALenient: *lenient, Log: os.Stderr,
		Checkpoint: checkpoint.Options{TokenizerDir: *tok, ConfigDir: *configDir, Variant: *variant},
	}
	for _, spec := range loras {
		l, err := cliflag.ParseLoRA(spec)
		if err != nil {
			return err
		}
		opts.LoRAs = append(opts.LoRAs, compiler.LoRASpec{Path: l.Path, Scale: l.Scale})
	}
	bars := map[string]*progress{}
	opts.Progress = func(component string, done, total int) {
		b, ok := bars[component]
		if !ok {
			b = newProgress(os.Stderr, component, total)
			bars[component] = b
		}
		b.Set(done)
		if done == total {
			b.Done()
		}
	}
	t0 := time.Now()
	res, err := compiler.Compile(opts)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(os.Stderr, "compiled in %s\n", time.Since(t0).Round(time.Millisecond))
	fmt.Println(res.Manifest.Summary())
	return nil
}

func parseBuckets(sizes string, batch int) ([]artifacts.Bucket, error) {
	if batch < 1 {
		return nil, fmt.Errorf("--batch %d: must be at least 1", batch)
	}
	parsed, err := cliflag.ParseSizes(sizes)
	if err != nil {
		return nil, err
	}
	out := make([]artifacts.Bucket, len(parsed))
	for i, s := range parsed {
		out[i] = artifacts.Bucket{Width: s.Width, Height: s.Height, Batch: batch}
	}
	return out, nil
}

func runInspect(args []string) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn inspect BUNDLE\n\nPrints the manifest summary and verifies every file's size and sha256.\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one bundle folder is required")
	}
	t0 := time.Now()
	b, err := artifacts.Open(fs.Arg(0), artifacts.Options{Verify: artifacts.VerifyFull})
	if err != nil {
		return err
	}
	fmt.Println(b.Summary())
	fmt.Printf("verified: every file's sha256 matches (%s)\n", time.Since(t0).Round(time.Millisecond))
	return nil
}
