// Package vae builds diffusers' AutoencoderKL (the Stable Diffusion VAE) as
// GoMLX graphs from its config.json.
//
// Role in the data flow: the scheduler loop ends with diffusion latents; the
// decoder (this package) turns them into the image the function encodes as
// PNG/JPEG. The encoder maps images to latent distributions, for img2img and
// for evaluation.
//
// Latent scaling convention: Decode and Encode work in the VAE's own latent
// space, exactly as diffusers' vae.decode / vae.encode(...).latent_dist, so
// Decode expects latents already divided by scaling_factor and Encode's mean
// is not multiplied by it. DecodeLatents (and DecodeOptions.FromDiffusion
// for compiled programs) takes the diffusion latents a scheduler produces
// and divides inside the graph, which is what a pipeline wants.
//
// Weights are bound by diffusers names ("decoder.up_blocks.0.resnets.1.
// conv1.weight") through nn.Scope; activations are NHWC inside the graphs and
// NCHW at the boundary, as diffusers' tensors.
package vae

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// vaeEps is the epsilon of every GroupNorm in AutoencoderKL; diffusers
// hard-codes it (unlike the UNet's configurable norm_eps).
const vaeEps = 1e-6

// Logvar clamp of diffusers' DiagonalGaussianDistribution.
const (
	logvarMin = -30
	logvarMax = 20
)

// Model is an AutoencoderKL of one configuration. It holds no weights: the
// graph functions bind them from the scope they are given, so one Model
// serves any checkpoint of that architecture.
type Model struct {
	cfg Config
}

// New validates the config and returns the model.
func New(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.BlockOutChannels = append([]int(nil), cfg.BlockOutChannels...)
	cfg.DownBlockTypes = append([]string(nil), cfg.DownBlockTypes...)
	cfg.UpBlockTypes = append([]string(nil), cfg.UpBlockTypes...)
	return &Model{cfg: cfg}, nil
}

// Config returns a copy of the model's configuration.
func (m *Model) Config() Config {
	c := m.cfg
	c.BlockOutChannels = append([]int(nil), c.BlockOutChannels...)
	c.DownBlockTypes = append([]string(nil), c.DownBlockTypes...)
	c.UpBlockTypes = append([]string(nil), c.UpBlockTypes...)
	return c
}

// Decode is diffusers' vae.decode(z).sample: z [B, latent_channels, h, w]
// NCHW in the VAE latent space (diffusion latents / scaling_factor) to the
// raw image [B, out_channels, h·f, w·f] NCHW, roughly in [-1, 1] and not
// clamped. s is the AutoencoderKL's root scope.
func (m *Model) Decode(s nn.Scope, z *Node) *Node {
	m.checkInput("latents", z, m.cfg.LatentChannels)
	return nn.NHWCToNCHW(m.decodeNHWC(s, nn.NCHWToNHWC(z)))
}

// DecodeLatents decodes diffusion latents (what the scheduler loop ends
// with): it divides by scaling_factor, then decodes.
func (m *Model) DecodeLatents(s nn.Scope, latents *Node) *Node {
	return m.Decode(s, m.Unscale(latents))
}

// Unscale maps diffusion latents to VAE latents (latents / scaling_factor).
func (m *Model) Unscale(latents *Node) *Node {
	return DivScalar(latents, m.cfg.ScalingFactor)
}

// Scale maps VAE latents (e.g. an encoder sample) to diffusion latents.
func (m *Model) Scale(z *Node) *Node {
	return MulScalar(z, m.cfg.ScalingFactor)
}

// Postprocess is diffusers' image denormalization (x/2 + 0.5).clamp(0, 1),
// layout-agnostic.
func Postprocess(x *Node) *Node {
	return ClipScalar(AddScalar(DivScalar(x, 2), 0.5), 0, 1)
}

// Encode is diffusers' vae.encode(image).latent_dist: image [B, in_channels,
// H, W] NCHW in [-1, 1] to the mean and the (clamped) log-variance, each
// [B, latent_channels, H/f, W/f] NCHW, in the VAE latent space (not
// multiplied by scaling_factor). std is exp(logvar/2).
func (m *Model) Encode(s nn.Scope, image *Node) (mean, logvar *Node) {
	m.checkInput("image", image, m.cfg.InChannels)
	mean, logvar = m.encodeNHWC(s, nn.NCHWToNHWC(image))
	return nn.NHWCToNCHW(mean), nn.NHWCToNCHW(logvar)
}

func (m *Model) checkInput(what string, x *Node, channels int) {
	d := x.Shape().Dimensions
	if len(d) != 4 || d[1] != channels {
		panic(fmt.Errorf("vae: %s has shape %v, want [batch, %d, height, width]", what, d, channels))
	}
}

// decodeNHWC is Decoder(post_quant_conv(z)) on NHWC data.
func (m *Model) decodeNHWC(s nn.Scope, z *Node) *Node {
	c := m.cfg
	x := z
	if c.UsePostQuantConv {
		x = nn.Conv2D(s.In("post_quant_conv"), x, 1, nn.Padding{})
	}
	d := s.In("decoder")
	n := len(c.BlockOutChannels)
	top := c.BlockOutChannels[n-1]
	x = nn.Conv2D(d.In("conv_in"), x, 1, nn.Same(3))
	expectChannels(d.Name("conv_in"), x, top)
	// With fp16 weights the full-resolution activations are kept in fp16
	// between row blocks too (nn.Blocked.Store), as diffusers' fp16 VAE
	// keeps them: half the memory of the largest tensors of a generation.
	store := dtypes.Float32
	if d.KeepsHalf("conv_in.weight") {
		store = dtypes.Float16
	}
	x = m.midBlock(d.In("mid_block"), x, store)
	for i := 0; i < n; i++ {
		// Up blocks walk block_out_channels backwards; all but the last
		// double the resolution.
		out := c.BlockOutChannels[n-1-i]
		x = m.upDecoderBlock(d.In("up_blocks", i), x, out, i < n-1, store)
	}
	// diffusers' conv_act is SiLU regardless of act_fn.
	x = nn.NormActConv(d.In("conv_norm_out"), x, c.NormNumGroups, vaeEps, nn.SiLU, d.In("conv_out"), 1, nn.Same(3), nn.Blocked{})
	expectChannels(d.Name("conv_out"), x, c.OutChannels)
	return x
}

// encodeNHWC is quant_conv(Encoder(x)) split into mean and clamped logvar.
func (m *Model) encodeNHWC(s nn.Scope, image *Node) (mean, logvar *Node) {
	c := m.cfg
	e := s.In("encoder")
	n := len(c.BlockOutChannels)
	x := nn.Conv2D(e.In("conv_in"), image, 1, nn.Same(3))
	expectChannels(e.Name("conv_in"), x, c.BlockOutChannels[0])
	for i := 0; i < n; i++ {
		x = m.downEncoderBlock(e.In("down_blocks", i), x, c.BlockOutChannels[i], i < n-1)
	}
	x = m.midBlock(e.In("mid_block"), x, dtypes.Float32)
	x = nn.GroupNorm(e.In("conv_norm_out"), x, c.NormNumGroups, vaeEps)
	x = nn.SiLU(x) // conv_act is SiLU regardless of act_fn
	x = nn.Conv2D(e.In("conv_out"), x, 1, nn.Same(3))
	expectChannels(e.Name("conv_out"), x, 2*c.LatentChannels)
	if c.UseQuantConv {
		x = nn.Conv2D(s.In("quant_conv"), x, 1, nn.Padding{})
		expectChannels(s.Name("quant_conv"), x, 2*c.LatentChannels)
	}
	// DiagonalGaussianDistribution: moments.chunk(2, dim=channels).
	l := c.LatentChannels
	mean = SliceAxis(x, 3, AxisRange(0, l))
	logvar = ClipScalar(SliceAxis(x, 3, AxisRange(l, 2*l)), logvarMin, logvarMax)
	return mean, logvar
}

// downEncoderBlock is DownEncoderBlock2D: layers_per_block resnets, then
// (except in the last block) a stride-2 conv after padding one pixel on the
// right and bottom only (Downsample2D with padding=0), so the output pixel
// grid is not shifted as a symmetric pad would shift it.
func (m *Model) downEncoderBlock(s nn.Scope, x *Node, out int, downsample bool) *Node {
	for j := 0; j < m.cfg.LayersPerBlock; j++ {
		x = m.resnet(s.In("resnets", j), x, out, dtypes.Float32)
	}
	if downsample {
		ds := s.In("downsamplers", 0, "conv")
		x = nn.Conv2D(ds, x, 2, nn.Padding{0, 1, 0, 1})
		expectChannels(s.Name("downsamplers.0.conv"), x, out)
	}
	return x
}

// upDecoderBlock is UpDecoderBlock2D: layers_per_block+1 resnets, then
// (except in the last block) nearest 2× upsampling and a 3×3 conv.
func (m *Model) upDecoderBlock(s nn.Scope, x *Node, out int, upsample bool, store dtypes.DType) *Node {
	for j := 0; j < m.cfg.LayersPerBlock+1; j++ {
		x = m.resnet(s.In("resnets", j), x, out, store)
	}
	if upsample {
		us := s.In("upsamplers", 0, "conv")
		x = nn.UpsampleConv(us, x, nn.Blocked{Store: store})
		expectChannels(s.Name("upsamplers.0.conv"), x, out)
	}
	return x
}

// midBlock is UNetMidBlock2D as the VAE configures it: resnet, optional
// single-head self-attention, resnet, all at the input's channel count.
func (m *Model) midBlock(s nn.Scope, x *Node, store dtypes.DType) *Node {
	c := channels(x)
	x = m.resnet(s.In("resnets", 0), x, c, store)
	if m.cfg.MidBlockAddAttention {
		x = m.attention(s.In("attentions", 0), nn.F32(x))
	}
	return m.resnet(s.In("resnets", 1), x, c, store)
}

// resnet is ResnetBlock2D without a time embedding: norm1 → act → conv1 →
// norm2 → act → conv2, plus the input (through a 1×1 conv_shortcut when the
// channel count changes); output_scale_factor is 1 in the VAE. x may be
// stored in fp16; where the convolutions run in row blocks their outputs
// are kept as store, and the shortcut is added to conv2's output a block
// at a time (nn.Blocked). Unblocked (the low resolutions) the shortcut is
// built before norm2, so x lives through conv1: a few MiB there.
func (m *Model) resnet(s nn.Scope, x *Node, out int, store dtypes.DType) *Node {
	g := m.cfg.NormNumGroups
	shortcut := func(r0, r1 int) *Node { return nn.Rows(x, r0, r1) }
	if channels(x) != out {
		sc := s.In("conv_shortcut")
		shortcut = func(r0, r1 int) *Node { return nn.Conv2D(sc, nn.Rows(x, r0, r1), 1, nn.Padding{}) }
	}
	act := func(x *Node) *Node { return activation(m.cfg.ActFn, x) }
	h := nn.NormActConv(s.In("norm1"), x, g, vaeEps, act, s.In("conv1"), 1, nn.Same(3), nn.Blocked{Store: store})
	expectChannels(s.Name("conv1"), h, out)
	h = nn.NormActConv(s.In("norm2"), h, g, vaeEps, act, s.In("conv2"), 1, nn.Same(3), nn.Blocked{Residual: shortcut, Store: store})
	expectChannels(s.Name("conv2"), h, out)
	return h
}

// attention is the VAE mid block's Attention: GroupNorm, then one head as
// wide as the channels (diffusers sets attention_head_dim to the channel
// count), output projection and the residual (rescale factor 1).
func (m *Model) attention(s nn.Scope, x *Node) *Node {
	d := x.Shape().Dimensions
	b, h, w, c := d[0], d[1], d[2], d[3]
	t := nn.GroupNorm(s.In("group_norm"), x, m.cfg.NormNumGroups, vaeEps)
	t = Reshape(t, b, h*w, c)
	names := attentionNames(s)
	q := nn.Linear(s.In(names[0]), t)
	k := nn.Linear(s.In(names[1]), t)
	v := nn.Linear(s.In(names[2]), t)
	o := nn.Attention(q, k, v, 1, nil)
	o = nn.Linear(s.In(names[3]), o)
	return Add(x, Reshape(o, b, h, w, c))
}

// attentionNames picks the projection names: diffusers' (to_q, to_k, to_v,
// to_out.0) or, for VAE files saved before diffusers renamed them (the
// SD1.x repositories still ship those), query, key, value, proj_attn, which
// diffusers itself converts at load.
func attentionNames(s nn.Scope) [4]string {
	if !s.Has("to_q.weight") && s.Has("query.weight") {
		return [4]string{"query", "key", "value", "proj_attn"}
	}
	return [4]string{"to_q", "to_k", "to_v", "to_out.0"}
}

// activation applies a diffusers get_activation name. nn.Activation covers
// silu/swish and gelu; relu and mish are only used here.
func activation(name string, x *Node) *Node {
	switch name {
	case "relu":
		return MaxScalar(x, 0)
	case "mish":
		return Mul(x, Tanh(Softplus(x)))
	}
	return nn.Activation(name, x)
}

func channels(x *Node) int {
	d := x.Shape().Dimensions
	return d[len(d)-1]
}

// expectChannels catches a checkpoint whose shapes disagree with the config
// at the layer that disagrees, instead of at some later, unrelated layer.
func expectChannels(layer string, x *Node, want int) {
	if got := channels(x); got != want {
		panic(fmt.Errorf("vae: %s produces %d channels, config says %d", layer, got, want))
	}
}
