package unet

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// StepShape is the shape bucket of one denoising step.
type StepShape struct {
	Batch         int // rows: 2 with classifier-free guidance
	LatentHeight  int
	LatentWidth   int
	SeqLen        int // prompt tokens (77)
	CondScale     int // control image pixels per latent pixel (8)
	NumControlNet int
}

// StepInputs lists the step program's input shapes, in order: latents
// [B, C, h, w] (NCHW as diffusers), timestep (scalar float32), prompt
// embeddings [B, S, D], then per ControlNet its control image
// [B, 3, 8h, 8w] and scales [B, skips+1].
func (u *UNet) StepInputs(sh StepShape, controlNets []*ControlNet) []shapes.Shape {
	c := &u.Config
	in := []shapes.Shape{
		shapes.Make(dtypes.Float32, sh.Batch, c.InChannels, sh.LatentHeight, sh.LatentWidth),
		shapes.Make(dtypes.Float32),
		shapes.Make(dtypes.Float32, sh.Batch, sh.SeqLen, c.CrossAttentionDim),
	}
	for _, cn := range controlNets {
		in = append(in,
			shapes.Make(dtypes.Float32, sh.Batch, cn.Config.ConditioningChannels, sh.LatentHeight*sh.CondScale, sh.LatentWidth*sh.CondScale),
			shapes.Make(dtypes.Float32, sh.Batch, cn.Config.NumSkips()+1))
	}
	return in
}

// CompileStep traces one denoising step as a single program: every
// ControlNet on its own control image, their residuals summed (as
// diffusers' MultiControlNetModel does), then the UNet's noise prediction
// (NCHW). One program per shape bucket keeps the residuals on the device
// and lets the backend schedule both networks together.
func CompileStep(name string, u *UNet, uw *nn.Weights, controlNets []*ControlNet, cws []*nn.Weights, sh StepShape) (*nn.Program, error) {
	if len(controlNets) != len(cws) {
		return nil, fmt.Errorf("compile %s: %d ControlNets but %d weight sets", name, len(controlNets), len(cws))
	}
	for i, cn := range controlNets {
		if cn.Config.NumSkips() != u.Config.NumSkips() {
			return nil, fmt.Errorf("compile %s: ControlNet %d has %d residuals, the UNet %d skips", name, i, cn.Config.NumSkips(), u.Config.NumSkips())
		}
		if cn.Config.CrossAttentionDim != u.Config.CrossAttentionDim {
			return nil, fmt.Errorf("compile %s: ControlNet %d cross_attention_dim %d, UNet %d (SD1 ControlNet on an SD2 model?)", name, i, cn.Config.CrossAttentionDim, u.Config.CrossAttentionDim)
		}
	}
	ws := append([]*nn.Weights{uw}, cws...)
	return nn.CompileMulti(name, ws, u.StepInputs(sh, controlNets), func(s []nn.Scope, in []*Node) []*Node {
		latents := nn.NCHWToNHWC(in[0])
		var res *Residuals
		if len(controlNets) > 0 {
			r := controlNetResiduals(controlNets, s[1:], latents, in)
			res = &r
		}
		return []*Node{nn.NHWCToNCHW(u.Forward(s[0], latents, in[1], in[2], res))}
	})
}

// controlNetResiduals runs every ControlNet on its control image (the step
// inputs, StepInputs order; latents already NHWC) and sums their residuals,
// as diffusers' MultiControlNetModel does.
func controlNetResiduals(controlNets []*ControlNet, scopes []nn.Scope, latents *Node, in []*Node) Residuals {
	var res Residuals
	for i, cn := range controlNets {
		r := cn.Forward(scopes[i], latents, in[1], in[2], nn.NCHWToNHWC(in[3+2*i]), in[4+2*i])
		if i == 0 {
			res = r
			continue
		}
		for j := range res.Down {
			res.Down[j] = Add(res.Down[j], r.Down[j])
		}
		res.Mid = Add(res.Mid, r.Mid)
	}
	return res
}

// CompileStepParts traces the two halves of CompileStep's program as
// separate programs, for benchmarks that report them apart: the
// ControlNets (the step's inputs in, their summed residuals out) and the
// UNet (latents, timestep and prompt in, without the residuals: adding them
// is a few elementwise ops). Serving keeps the fused step.
func CompileStepParts(name string, u *UNet, uw *nn.Weights, controlNets []*ControlNet, cws []*nn.Weights, sh StepShape) (cnProg, unetProg *nn.Program, err error) {
	if len(controlNets) == 0 || len(controlNets) != len(cws) {
		return nil, nil, fmt.Errorf("compile %s: %d ControlNets, %d weight sets", name, len(controlNets), len(cws))
	}
	in := u.StepInputs(sh, controlNets)
	cnProg, err = nn.CompileMulti(name+"_controlnets", cws, in, func(s []nn.Scope, in []*Node) []*Node {
		res := controlNetResiduals(controlNets, s, nn.NCHWToNHWC(in[0]), in)
		return append(res.Down, res.Mid)
	})
	if err != nil {
		return nil, nil, err
	}
	unetProg, err = nn.Compile(name+"_unet", uw, in[:3], func(s nn.Scope, in []*Node) []*Node {
		return []*Node{nn.NHWCToNCHW(u.Forward(s, nn.NCHWToNHWC(in[0]), in[1], in[2], nil))}
	})
	if err != nil {
		cnProg.Close()
		return nil, nil, err
	}
	return cnProg, unetProg, nil
}
