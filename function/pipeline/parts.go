package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/tensors"
)

// StepParts is the time of one denoising step's two halves run as
// separate programs.
type StepParts struct {
	ControlNets, UNet time.Duration
}

// TimeStepParts runs the ControlNets and the UNet of one guided step at a
// size as separate programs (unet.CompileStepParts, on the loaded weights)
// and times a warm call of each: what a per-stage benchmark reports, since
// generations run the two fused in one program. It waits for any running
// generation; the programs are freed before it returns.
func (p *Pipeline) TimeStepParts(width, height, images int) (StepParts, error) {
	var out StepParts
	if err := p.acquire(context.Background()); err != nil {
		return out, err
	}
	defer p.release()
	if width%p.vaeFactor != 0 || height%p.vaeFactor != 0 || images < 1 {
		return out, fmt.Errorf("pipeline: step parts at %dx%d x%d: size must be a multiple of %d", width, height, images, p.vaeFactor)
	}
	sh := unet.StepShape{Batch: 2 * images, LatentHeight: height / p.vaeFactor, LatentWidth: width / p.vaeFactor,
		SeqLen: p.tokens, CondScale: p.vaeFactor, NumControlNet: len(p.cnets)}
	cnProg, unetProg, err := unet.CompileStepParts(fmt.Sprintf("parts_b%d_%dx%d", sh.Batch, sh.LatentHeight, sh.LatentWidth),
		p.unet, p.unetW, p.cnets, p.cnetW, sh)
	if err != nil {
		return out, fmt.Errorf("pipeline: %w", err)
	}
	defer cnProg.Close()
	defer unetProg.Close()
	in := p.unet.StepInputs(sh, p.cnets)
	inputs := make([]*tensors.Tensor, len(in))
	for i, s := range in {
		inputs[i] = filled(s, i)
	}
	timeRun := func(run func() ([]*tensors.Tensor, error)) (time.Duration, error) {
		var d time.Duration
		for range 2 { // the first call warms buffers and caches
			t0 := time.Now()
			outs, err := run()
			if err != nil {
				return 0, err
			}
			d = time.Since(t0)
			for _, o := range outs {
				_ = o.FinalizeAll()
			}
		}
		return d, nil
	}
	if out.ControlNets, err = timeRun(func() ([]*tensors.Tensor, error) { return cnProg.Run(inputs...) }); err != nil {
		return out, fmt.Errorf("pipeline: step parts: %w", err)
	}
	if out.UNet, err = timeRun(func() ([]*tensors.Tensor, error) { return unetProg.Run(inputs[:3]...) }); err != nil {
		return out, fmt.Errorf("pipeline: step parts: %w", err)
	}
	return out, nil
}

// filled is a benchmark input: the timestep 500, ControlNet scales 1, and
// a small deterministic pattern elsewhere (zeros could take fast paths).
func filled(s shapes.Shape, index int) *tensors.Tensor {
	t := tensors.FromShape(s)
	tensors.MustMutableFlatData[float32](t, func(flat []float32) {
		for i := range flat {
			switch {
			case index == 1:
				flat[i] = 500
			case s.Rank() == 2 && index > 2:
				flat[i] = 1
			default:
				flat[i] = float32(i%17)/17 - 0.5
			}
		}
	})
	return t
}
