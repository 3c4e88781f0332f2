package pipeline

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/tokenizer"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// Model is one network of the pipeline: its parsed config and its weights
// by diffusers name.
type Model[C any] struct {
	Config  C
	Weights nn.Source
}

// Components is everything a Pipeline is built from. A loader fills it; the
// Pipeline reads weights from the sources while it compiles programs, so
// they must stay readable for the Pipeline's lifetime.
type Components struct {
	TextEncoder Model[clip.Config]
	UNet        Model[unet.Config]
	// ControlNets run together on every step, their residuals summed
	// (diffusers' MultiControlNetModel); a request gives one control image
	// per ControlNet, in this order.
	ControlNets []Model[unet.Config]
	VAE         Model[vae.Config]
	Tokenizer   *tokenizer.Tokenizer
	// SchedulerConfig is the checkpoint's scheduler_config.json; every
	// scheduler a request names is built from it, as from_config does.
	SchedulerConfig []byte

	// closers are the files LoadDiffusers opened.
	closers []io.Closer
}

// Close releases the files LoadDiffusers opened. Close the Pipeline built
// from the components first.
func (c *Components) Close() error {
	var errs []error
	for _, f := range c.closers {
		errs = append(errs, f.Close())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// ReleaseMapped tells the kernel that no mapped page of the weight files is
// needed any more (see safetensors.File.Release); the files stay mapped and
// readable, a later read faults its pages back in. Call it once a Pipeline
// has copied the weights to the backend. Releasing each weight right after
// its upload is not enough: on the SD1.5 bundle 0.38 GiB of file pages
// stayed resident after the cold start, nearly all of it as PMD-mapped
// large page-cache folios (a fault maps the whole folio, neighbours
// already released included), plus any weight no program reads.
func (c *Components) ReleaseMapped() {
	type releaser interface {
		Names() []string
		Release(name string)
	}
	srcs := []nn.Source{c.TextEncoder.Weights, c.UNet.Weights, c.VAE.Weights}
	for _, m := range c.ControlNets {
		srcs = append(srcs, m.Weights)
	}
	for _, s := range srcs {
		if r, ok := s.(releaser); ok {
			for _, name := range r.Names() {
				r.Release(name)
			}
		}
	}
}

// weightFiles are the names diffusers saves a model's weights under, in the
// order they are tried (full precision first).
var weightFiles = []string{
	"diffusion_pytorch_model.safetensors",
	"model.safetensors",
	"diffusion_pytorch_model.fp16.safetensors",
	"model.fp16.safetensors",
}

// LoadDiffusers fills Components from a diffusers pipeline folder
// (text_encoder/, tokenizer/, unet/, vae/, scheduler/) and ControlNet model
// folders. Without controlNetDirs it uses dir/controlnet. The weights are
// memory-mapped, not copied; call Close when done.
func LoadDiffusers(dir string, controlNetDirs ...string) (_ *Components, err error) {
	c := &Components{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if len(controlNetDirs) == 0 {
		controlNetDirs = []string{filepath.Join(dir, "controlnet")}
	}

	if c.TextEncoder.Config, err = clip.LoadConfig(filepath.Join(dir, "text_encoder", "config.json")); err != nil {
		return nil, fmt.Errorf("load %s: text encoder: %w", dir, err)
	}
	if c.TextEncoder.Weights, err = c.open(filepath.Join(dir, "text_encoder")); err != nil {
		return nil, err
	}
	if c.UNet.Config, err = unet.LoadConfig(filepath.Join(dir, "unet", "config.json")); err != nil {
		return nil, fmt.Errorf("load %s: unet: %w", dir, err)
	}
	if c.UNet.Weights, err = c.open(filepath.Join(dir, "unet")); err != nil {
		return nil, err
	}
	for _, cdir := range controlNetDirs {
		var m Model[unet.Config]
		if m.Config, err = unet.LoadConfig(filepath.Join(cdir, "config.json")); err != nil {
			return nil, fmt.Errorf("load controlnet %s: %w", cdir, err)
		}
		if m.Weights, err = c.open(cdir); err != nil {
			return nil, err
		}
		c.ControlNets = append(c.ControlNets, m)
	}
	if c.VAE.Config, err = vae.LoadConfig(filepath.Join(dir, "vae", "config.json")); err != nil {
		return nil, fmt.Errorf("load %s: vae: %w", dir, err)
	}
	if c.VAE.Weights, err = c.open(filepath.Join(dir, "vae")); err != nil {
		return nil, err
	}
	if c.Tokenizer, err = tokenizer.Load(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	if c.SchedulerConfig, err = os.ReadFile(filepath.Join(dir, "scheduler", "scheduler_config.json")); err != nil {
		return nil, fmt.Errorf("load %s: scheduler: %w", dir, err)
	}
	return c, nil
}

// open maps the first weight file found in a model folder.
func (c *Components) open(dir string) (nn.Source, error) {
	for _, name := range weightFiles {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		f, err := safetensors.Open(path)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", path, err)
		}
		c.closers = append(c.closers, f)
		return nn.FileSource{File: f}, nil
	}
	return nil, fmt.Errorf("load %s: no weight file (want one of %q)", dir, weightFiles)
}
