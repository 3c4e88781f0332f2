package unet

import (
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/nn"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// Residuals are ControlNet's additions to the UNet's skip connections, in
// the UNet's skip order, NHWC.
type Residuals struct {
	Down []*Node
	Mid  *Node
}

// UNet is UNet2DConditionModel.
type UNet struct {
	Config Config
}

// NewUNet checks that the config describes a full UNet (with up blocks).
func NewUNet(cfg Config) (*UNet, error) {
	if len(cfg.UpBlockTypes) == 0 {
		return nil, fmt.Errorf("unet: config has no up_block_types (is it a ControlNet config?)")
	}
	return &UNet{Config: cfg}, nil
}

// NumSkips is how many skip tensors the encoder produces: the count of
// ControlNet down residuals the UNet accepts.
func (c *Config) NumSkips() int {
	n := 1
	for i := range c.DownBlockTypes {
		n += c.LayersPerBlock[i]
		if i < len(c.DownBlockTypes)-1 {
			n++
		}
	}
	return n
}

// Forward predicts noise. sample is NHWC latents [B, h, w, in_channels], t a
// scalar or [B] timestep, ctx the prompt embeddings [B, 77, cross_dim];
// res may be nil. Returns NHWC [B, h, w, out_channels].
func (m *UNet) Forward(s nn.Scope, sample, t, ctx *Node, res *Residuals) *Node {
	c := &m.Config
	batch := sample.Shape().Dimensions[0]
	if err := c.checkLatentSize(sample); err != nil {
		panic(err)
	}
	if c.CenterInputSample {
		sample = AddScalar(MulScalar(sample, 2), -1)
	}
	temb := c.timestepEmbedding(s, timesteps(t, batch))
	x := nn.Conv2D(s.In("conv_in"), sample, 1, nn.Same(c.ConvInKernel))
	x, skips := c.downBlocks(s, x, temb, ctx)
	if res != nil {
		if len(res.Down) != len(skips) {
			panic(fmt.Errorf("unet: %d ControlNet down residuals, the UNet has %d skips", len(res.Down), len(skips)))
		}
		added := make([]*Node, len(skips))
		for i := range skips {
			added[i] = Add(skips[i], res.Down[i])
		}
		skips = added
	}
	x = c.midBlock(s.In("mid_block"), x, temb, ctx)
	if res != nil && res.Mid != nil {
		x = Add(x, res.Mid)
	}
	x = c.upBlocks(s, x, temb, ctx, skips)
	act := func(x *Node) *Node { return nn.Activation(c.ActFn, x) }
	return nn.NormActConv(s.In("conv_norm_out"), x, c.NormNumGroups, c.NormEps, act, s.In("conv_out"), 1, nn.Same(c.ConvOutKernel), nn.Blocked{})
}

// checkLatentSize refuses latents the down path cannot halve evenly: the up
// path would not line up with the skips.
func (c *Config) checkLatentSize(sample *Node) error {
	d := sample.Shape().Dimensions
	if len(d) != 4 || d[3] != c.InChannels {
		return fmt.Errorf("latents %v: want NHWC with %d channels", d, c.InChannels)
	}
	f := 1 << (len(c.DownBlockTypes) - 1)
	if d[1]%f != 0 || d[2]%f != 0 {
		return fmt.Errorf("latent size %dx%d is not a multiple of %d", d[1], d[2], f)
	}
	return nil
}

// ControlNet is ControlNetModel: the UNet encoder and mid block fed with the
// control image, emitting one zero-conv'd residual per UNet skip.
type ControlNet struct {
	Config Config
}

// NewControlNet wraps a ControlNetModel config.
func NewControlNet(cfg Config) (*ControlNet, error) {
	return &ControlNet{Config: cfg}, nil
}

// Forward computes the residuals. sample NHWC latents, t timestep, ctx the
// prompt embeddings, cond the NHWC control image [B, 8h, 8w, 3] in [0, 1].
// scales [B, NumSkips()+1] holds, per batch row, one multiplier per down
// residual plus one for the mid residual: conditioning_scale everywhere,
// guess mode's logspace ramp, or zeros (outside the control guidance window,
// or the unconditional row in guess mode). It is a graph input, so none of
// these needs a recompile.
func (m *ControlNet) Forward(s nn.Scope, sample, t, ctx, cond, scales *Node) Residuals {
	c := &m.Config
	batch := sample.Shape().Dimensions[0]
	if err := c.checkLatentSize(sample); err != nil {
		panic(err)
	}
	n := c.NumSkips()
	if scales.Rank() != 2 || scales.Shape().Dimensions[0] != batch || scales.Shape().Dimensions[1] != n+1 {
		panic(fmt.Errorf("controlnet: scales shape %s, want [%d, %d]", scales.Shape(), batch, n+1))
	}
	if c.ChannelOrderBGR {
		cond = Reverse(cond, 3)
	}
	temb := c.timestepEmbedding(s, timesteps(t, batch))
	x := nn.Conv2D(s.In("conv_in"), sample, 1, nn.Same(c.ConvInKernel))
	x = Add(x, c.condEmbedding(s.In("controlnet_cond_embedding"), cond))
	x, skips := c.downBlocks(s, x, temb, ctx)
	x = c.midBlock(s.In("mid_block"), x, temb, ctx)

	out := Residuals{Down: make([]*Node, len(skips))}
	for i, skip := range skips {
		r := nn.Conv2D(s.In("controlnet_down_blocks", i), skip, 1, nn.Padding{})
		out.Down[i] = c.scaleResidual(r, scales, i)
	}
	mid := nn.Conv2D(s.In("controlnet_mid_block"), x, 1, nn.Padding{})
	out.Mid = c.scaleResidual(mid, scales, n)
	return out
}

func (c *Config) scaleResidual(r, scales *Node, i int) *Node {
	r = Mul(r, Reshape(Slice(scales, AxisRange(), AxisRange(i, i+1)), -1, 1, 1, 1))
	if c.GlobalPoolConditions {
		r = ReduceAndKeep(r, ReduceMean, 1, 2)
	}
	return r
}

// condEmbedding is ControlNetConditioningEmbedding: conv_in, then per
// channel step a 3×3 conv and a stride-2 3×3 conv (each with SiLU), then
// conv_out into the UNet's first block width. The control image must be 2^k
// times the latent size, k the number of stride-2 steps.
func (c *Config) condEmbedding(s nn.Scope, cond *Node) *Node {
	x := nn.SiLU(nn.Conv2D(s.In("conv_in"), cond, 1, nn.Same(3)))
	chans := c.ConditioningEmbeddingOutChannels
	for i := 0; i < len(chans)-1; i++ {
		x = nn.SiLU(nn.Conv2D(s.In("blocks", 2*i), x, 1, nn.Same(3)))
		x = nn.SiLU(nn.Conv2D(s.In("blocks", 2*i+1), x, 2, nn.Same(3)))
	}
	return nn.Conv2D(s.In("conv_out"), x, 1, nn.Same(3))
}

// GuessModeScales is ControlNet's guess-mode ramp: logspace(-1, 0, n+1)
// times the conditioning scale, from the first skip to the mid block.
func GuessModeScales(numSkips int, scale float32) []float32 {
	out := make([]float32, numSkips+1)
	for i := range out {
		e := -1 + float64(i)/float64(numSkips)
		out[i] = float32(math.Pow(10, e)) * scale
	}
	return out
}

// UniformScales is conditioning_scale for every residual.
func UniformScales(numSkips int, scale float32) []float32 {
	out := make([]float32, numSkips+1)
	for i := range out {
		out[i] = scale
	}
	return out
}
