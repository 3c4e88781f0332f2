package vae

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
)

// DecodeOptions choose what a compiled decoder takes and returns. The zero
// value is diffusers' vae.decode: VAE latents in, raw NCHW image out.
type DecodeOptions struct {
	// FromDiffusion: the input is diffusion latents (the scheduler's
	// output); the program divides by scaling_factor itself.
	FromDiffusion bool
	// Postprocess: return (x/2 + 0.5).clamp(0, 1) instead of the raw image.
	Postprocess bool
	// ChannelsLast: return [B, H, W, C] (what image encoders and diffusers'
	// output_type="np" use) instead of NCHW; the decoder computes NHWC, so
	// this also saves a transpose.
	ChannelsLast bool
}

// CompileDecoder compiles a decoder for latents [batch, latent_channels,
// latentHeight, latentWidth] (NCHW). The program has one input and one
// output, the image of DownscaleFactor times the latent size.
func (m *Model) CompileDecoder(w *nn.Weights, batch, latentHeight, latentWidth int, opt DecodeOptions) (*nn.Program, error) {
	if batch < 1 || latentHeight < 1 || latentWidth < 1 {
		return nil, fmt.Errorf("vae decoder: invalid latent size batch %d, %dx%d", batch, latentHeight, latentWidth)
	}
	name := fmt.Sprintf("vae_decoder_b%d_%dx%d", batch, latentHeight, latentWidth)
	in := shapes.Make(dtypes.Float32, batch, m.cfg.LatentChannels, latentHeight, latentWidth)
	p, err := nn.Compile(name, w, []shapes.Shape{in}, func(s nn.Scope, inputs []*graph.Node) []*graph.Node {
		z := inputs[0]
		if opt.FromDiffusion {
			z = m.Unscale(z)
		}
		m.checkInput("latents", z, m.cfg.LatentChannels)
		x := m.decodeNHWC(s, nn.NCHWToNHWC(z))
		if opt.Postprocess {
			x = Postprocess(x)
		}
		if !opt.ChannelsLast {
			x = nn.NHWCToNCHW(x)
		}
		return []*graph.Node{x}
	})
	if err != nil {
		return nil, fmt.Errorf("vae decoder: %w", err)
	}
	return p, nil
}

// CompileEncoder compiles an encoder for images [batch, in_channels,
// height, width] (NCHW, in [-1, 1]). The program returns mean and logvar,
// both [batch, latent_channels, height/f, width/f] NCHW in the VAE latent
// space (multiply a sample by scaling_factor to get diffusion latents).
func (m *Model) CompileEncoder(w *nn.Weights, batch, height, width int) (*nn.Program, error) {
	if batch < 1 || height < 1 || width < 1 {
		return nil, fmt.Errorf("vae encoder: invalid image size batch %d, %dx%d", batch, height, width)
	}
	name := fmt.Sprintf("vae_encoder_b%d_%dx%d", batch, height, width)
	in := shapes.Make(dtypes.Float32, batch, m.cfg.InChannels, height, width)
	p, err := nn.Compile(name, w, []shapes.Shape{in}, func(s nn.Scope, inputs []*graph.Node) []*graph.Node {
		mean, logvar := m.Encode(s, inputs[0])
		return []*graph.Node{mean, logvar}
	})
	if err != nil {
		return nil, fmt.Errorf("vae encoder: %w", err)
	}
	return p, nil
}
