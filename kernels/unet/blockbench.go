package unet

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
	"github.com/gomlx/gomlx/core/tensors"
)

// Block kinds CompileBlock builds in isolation.
const (
	BlockResnet      = "resnet"
	BlockTransformer = "transformer"
)

// CompileBlock builds one SD block of this config in isolation, with random
// weights, for per-block benchmarks against other implementations: a
// ResnetBlock2D (ch → ch, with time embedding) or a Transformer2DModel
// (ch channels, the config's head count for that width, cross-attention
// on seqLen prompt tokens). It returns a function running it once.
func (c *Config) CompileBlock(backend compute.Backend, kind string, batch, res, ch, seqLen int) (func() error, error) {
	heads := 0
	for i, bc := range c.BlockOutChannels {
		if bc == ch {
			heads = c.AttentionHeads[i]
		}
	}
	if heads == 0 {
		return nil, fmt.Errorf("block bench: %d channels is no block width of this config", ch)
	}
	full := c.WeightShapes(false)
	sh := map[string][]int{}
	var prefix string
	in := []shapes.Shape{shapes.Make(dtypes.Float32, batch, res, res, ch)}
	switch kind {
	case BlockResnet:
		prefix = fmt.Sprintf("mid_block.resnets.0.")
		if ch != c.BlockOutChannels[len(c.BlockOutChannels)-1] {
			// Take a same-width resnet of the right block.
			for i, bc := range c.BlockOutChannels {
				if bc == ch {
					prefix = fmt.Sprintf("down_blocks.%d.resnets.1.", i)
				}
			}
		}
		in = append(in, shapes.Make(dtypes.Float32, batch, c.TimeEmbeddingDim))
	case BlockTransformer:
		prefix = "mid_block.attentions.0."
		for i, bc := range c.BlockOutChannels {
			if bc == ch && c.DownBlockTypes[i] == "CrossAttnDownBlock2D" {
				prefix = fmt.Sprintf("down_blocks.%d.attentions.0.", i)
				break
			}
		}
		in = append(in, shapes.Make(dtypes.Float32, batch, seqLen, c.CrossAttentionDim))
	default:
		return nil, fmt.Errorf("block bench: unknown kind %q", kind)
	}
	for name, s := range full {
		if len(name) > len(prefix) && name[:len(prefix)] == prefix {
			sh[name[len(prefix):]] = s
		}
	}
	w := nn.NewWeights(backend, nn.RandomSource{Shapes: sh, Seed: 11}, nn.Widen)
	p, err := nn.Compile(kind, w, in, func(s nn.Scope, x []*Node) []*Node {
		if kind == BlockResnet {
			return []*Node{c.resnet(s, x[0], x[1], 1)}
		}
		return []*Node{c.transformer2D(s, x[0], x[1], heads, 1)}
	})
	if err != nil {
		return nil, err
	}
	args := make([]*tensors.Tensor, len(in))
	for i, s := range in {
		args[i] = tensors.FromShape(s)
	}
	return func() error {
		_, err := p.Run(args...)
		return err
	}, nil
}
