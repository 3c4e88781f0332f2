package unet

import (
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// transformerNormEps is Transformer2DModel's GroupNorm epsilon, fixed in
// diffusers regardless of norm_eps.
const transformerNormEps = 1e-6

// layerNormEps is BasicTransformerBlock's LayerNorm epsilon (diffusers'
// norm_eps default for that block).
const layerNormEps = 1e-5

// timestepEmbedding is diffusers' get_timestep_embedding followed by
// TimestepEmbedding (linear_1, act, linear_2). t is [B] float32.
func (c *Config) timestepEmbedding(s nn.Scope, t *Node) *Node {
	dim := c.BlockOutChannels[0]
	half := dim / 2
	// Frequencies in float32 as torch computes them: exp(-ln(1e4)·i / (half - shift)).
	freqs := make([]float32, half)
	for i := range freqs {
		e := float32(-math.Log(10000)) * float32(i)
		e /= float32(float64(half) - c.FreqShift)
		freqs[i] = float32(math.Exp(float64(e)))
	}
	g := t.Graph()
	arg := Mul(InsertAxes(t, -1), InsertAxes(Const(g, freqs), 0)) // [B, half]
	sin, cos := Sin(arg), Cos(arg)
	var emb *Node
	if c.FlipSinToCos {
		emb = Concatenate([]*Node{cos, sin}, -1)
	} else {
		emb = Concatenate([]*Node{sin, cos}, -1)
	}
	emb = nn.Linear(s.In("time_embedding", "linear_1"), emb)
	emb = nn.Activation(c.ActFn, emb)
	return nn.Linear(s.In("time_embedding", "linear_2"), emb)
}

// resnet is ResnetBlock2D with a time embedding ("default" time scale
// shift: the projected embedding is added between the two convolutions).
func (c *Config) resnet(s nn.Scope, x, temb *Node, outputScale float64) *Node {
	// The shortcut first, so that x is freed after norm1 (ops run in
	// creation order; see the VAE's resnet).
	shortcut := x
	if s.Has("conv_shortcut.weight") {
		shortcut = nn.Conv2D(s.In("conv_shortcut"), x, 1, nn.Padding{})
	}
	act := func(x *Node) *Node { return nn.Activation(c.ActFn, x) }
	h := nn.NormActConv(s.In("norm1"), x, c.NormNumGroups, c.NormEps, act, s.In("conv1"), 1, nn.Same(3), nn.Blocked{})
	if temb != nil {
		t := nn.Linear(s.In("time_emb_proj"), nn.Activation(c.ActFn, temb)) // [B, C]
		h = Add(h, InsertAxes(t, 1, 1))
	}
	h = nn.NormActConv(s.In("norm2"), h, c.NormNumGroups, c.NormEps, act, s.In("conv2"), 1, nn.Same(3), nn.Blocked{})
	y := Add(shortcut, h)
	if outputScale != 1 {
		y = DivScalar(y, outputScale)
	}
	return y
}

// transformer2D is Transformer2DModel: GroupNorm, projection in, a stack of
// BasicTransformerBlocks over the H·W tokens, projection out, residual.
// With NHWC activations a 1×1 conv projection and a linear one are the same
// matmul; the checkpoint's weight shape ([C, C, 1, 1] or [C, C]) is
// accepted either way, and use_linear_projection only decides which the
// config promises.
func (c *Config) transformer2D(s nn.Scope, x, ctx *Node, heads, layers int) *Node {
	d := x.Shape().Dimensions
	b, h, w, ch := d[0], d[1], d[2], d[3]
	if err := c.checkProjection(s); err != nil {
		panic(err)
	}
	y := nn.GroupNorm(s.In("norm"), x, c.NormNumGroups, transformerNormEps)
	y = Reshape(y, b, h*w, ch)
	y = nn.Linear(s.In("proj_in"), y)
	for i := 0; i < layers; i++ {
		y = c.basicTransformerBlock(s.In("transformer_blocks", i), y, ctx, heads)
	}
	y = nn.Linear(s.In("proj_out"), y)
	return Add(Reshape(y, b, h, w, y.Shape().Dimensions[2]), x)
}

// checkProjection catches a checkpoint whose proj_in does not match the
// config's use_linear_projection (SD1 vs SD2 mixed up).
func (c *Config) checkProjection(s nn.Scope) error {
	name := s.Name("proj_in.weight")
	rank := len(s.StoredShape("proj_in.weight"))
	switch {
	case c.UseLinearProjection && rank != 2:
		return fmt.Errorf("%s has rank %d but use_linear_projection is true (want a [out, in] linear weight)", name, rank)
	case !c.UseLinearProjection && rank != 4:
		return fmt.Errorf("%s has rank %d but use_linear_projection is false (want a [out, in, 1, 1] conv weight)", name, rank)
	}
	return nil
}

// basicTransformerBlock: self-attention, cross-attention on the prompt
// embeddings, GEGLU feed-forward; each pre-LayerNorm with a residual.
func (c *Config) basicTransformerBlock(s nn.Scope, x, ctx *Node, heads int) *Node {
	x = Add(x, attention(s.In("attn1"), nn.LayerNorm(s.In("norm1"), x, layerNormEps), nil, heads))
	x = Add(x, attention(s.In("attn2"), nn.LayerNorm(s.In("norm2"), x, layerNormEps), ctx, heads))
	return Add(x, geglu(s.In("ff"), nn.LayerNorm(s.In("norm3"), x, layerNormEps)))
}

// attention is diffusers' Attention with to_q/to_k/to_v/to_out.0; ctx nil
// means self-attention.
func attention(s nn.Scope, x, ctx *Node, heads int) *Node {
	if ctx == nil {
		ctx = x
	}
	q := nn.Linear(s.In("to_q"), x)
	k := nn.Linear(s.In("to_k"), ctx)
	v := nn.Linear(s.In("to_v"), ctx)
	return nn.Linear(s.In("to_out", 0), nn.Attention(q, k, v, heads, nil))
}

// geglu is FeedForward with the GEGLU activation: the first projection's
// output splits into a value half and a gate half (value first).
func geglu(s nn.Scope, x *Node) *Node {
	h := nn.Linear(s.In("net", 0, "proj"), x)
	parts := Split(h, -1, 2)
	h = Mul(parts[0], nn.GELU(parts[1]))
	return nn.Linear(s.In("net", 2), h)
}

// downsample is Downsample2D: a stride-2 3×3 conv; with padding 0 diffusers
// pads right and bottom by one first.
func (c *Config) downsample(s nn.Scope, x *Node) *Node {
	pad := nn.Padding{1, 1, 1, 1}
	if c.DownsamplePadding == 0 {
		pad = nn.Padding{0, 1, 0, 1}
	}
	return nn.Conv2D(s.In("conv"), x, 2, pad)
}

// downBlocks runs conv_in's output through the encoder, returning the final
// hidden state and every skip tensor in diffusers' order (conv_in output
// first, then each resnet/attention output and each downsample output).
func (c *Config) downBlocks(s nn.Scope, x, temb, ctx *Node) (*Node, []*Node) {
	skips := []*Node{x}
	for i, typ := range c.DownBlockTypes {
		bs := s.In("down_blocks", i)
		for j := 0; j < c.LayersPerBlock[i]; j++ {
			x = c.resnet(bs.In("resnets", j), x, temb, 1)
			if typ == "CrossAttnDownBlock2D" {
				x = c.transformer2D(bs.In("attentions", j), x, ctx, c.AttentionHeads[i], c.TransformerLayers[i])
			}
			skips = append(skips, x)
		}
		if i < len(c.DownBlockTypes)-1 {
			x = c.downsample(bs.In("downsamplers", 0), x)
			skips = append(skips, x)
		}
	}
	return x, skips
}

// midBlock is UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet)
// once per attention layer (one for SD).
func (c *Config) midBlock(s nn.Scope, x, temb, ctx *Node) *Node {
	last := len(c.BlockOutChannels) - 1
	x = c.resnet(s.In("resnets", 0), x, temb, c.MidBlockScale)
	x = c.transformer2D(s.In("attentions", 0), x, ctx, c.AttentionHeads[last], c.TransformerLayers[last])
	return c.resnet(s.In("resnets", 1), x, temb, c.MidBlockScale)
}

// upBlocks is the decoder: each block takes layers_per_block+1 skips from
// the end of the list, concatenated on channels before each resnet.
func (c *Config) upBlocks(s nn.Scope, x, temb, ctx *Node, skips []*Node) *Node {
	n := len(c.UpBlockTypes)
	for i, typ := range c.UpBlockTypes {
		rev := n - 1 - i // the down block this up block mirrors
		bs := s.In("up_blocks", i)
		for j := 0; j < c.LayersPerBlock[rev]+1; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			x = Concatenate([]*Node{x, skip}, -1)
			x = c.resnet(bs.In("resnets", j), x, temb, 1)
			if typ == "CrossAttnUpBlock2D" {
				x = c.transformer2D(bs.In("attentions", j), x, ctx, c.AttentionHeads[rev], c.TransformerLayers[rev])
			}
		}
		if i < n-1 {
			x = nn.UpsampleConv(bs.In("upsamplers", 0, "conv"), x, nn.Blocked{})
		}
	}
	return x
}

// timesteps normalizes a timestep input to float32 [B]: a scalar is
// broadcast, integers are converted (the UNet casts them to float anyway).
func timesteps(t *Node, batch int) *Node {
	if t.DType() != dtypes.Float32 {
		t = ConvertDType(t, dtypes.Float32)
	}
	if t.Rank() == 0 {
		t = BroadcastToDims(t, batch)
	}
	if t.Rank() != 1 || t.Shape().Dimensions[0] != batch {
		panic(fmt.Errorf("timestep shape %s: want a scalar or [%d]", t.Shape(), batch))
	}
	return t
}
