package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/tokenizer"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// LoadBundle fills Components from a compiled, verified bundle (see
// artifacts.Open): its fp16 weights are memory-mapped, its configs parsed
// by the kernels that will run them. ControlNets come in the bundle's
// component order (controlnet.0, controlnet.1, ...).
func LoadBundle(b *artifacts.Bundle) (_ *Components, err error) {
	c := &Components{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	source := func(comp artifacts.Component) (nn.Source, []byte, error) {
		cfg, err := os.ReadFile(b.Path(comp.Config))
		if err != nil {
			return nil, nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
		}
		f, err := safetensors.Open(b.Path(comp.Weights))
		if err != nil {
			return nil, nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
		}
		c.closers = append(c.closers, f)
		return nn.FileSource{File: f}, cfg, nil
	}
	seen := map[string]bool{}
	for _, comp := range b.Manifest.Components {
		src, cfg, err := source(comp)
		if err != nil {
			return nil, err
		}
		seen[comp.Kind] = true
		switch comp.Kind {
		case artifacts.KindTextEncoder:
			c.TextEncoder.Weights = src
			c.TextEncoder.Config, err = clip.ParseConfig(cfg)
		case artifacts.KindUNet:
			c.UNet.Weights = src
			c.UNet.Config, err = unet.ParseConfig(cfg)
		case artifacts.KindVAE:
			c.VAE.Weights = src
			c.VAE.Config, err = vae.ParseConfig(cfg)
		case artifacts.KindControlNet:
			var cn Model[unet.Config]
			cn.Weights = src
			cn.Config, err = unet.ParseConfig(cfg)
			c.ControlNets = append(c.ControlNets, cn)
		default:
			err = fmt.Errorf("component kind %q is not one this function serves", comp.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("bundle %s: component %s: %w", b.Dir, comp.Name, err)
		}
	}
	var missing []string
	for _, k := range []string{artifacts.KindTextEncoder, artifacts.KindUNet, artifacts.KindVAE, artifacts.KindControlNet} {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("bundle %s: no %s component", b.Dir, strings.Join(missing, ", "))
	}
	if c.Tokenizer, err = tokenizer.Load(b.Path(artifacts.TokenizerDir)); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
	}
	if c.SchedulerConfig, err = os.ReadFile(filepath.Join(b.Dir, artifacts.SchedulerConfigPath)); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
	}
	return c, nil
}
