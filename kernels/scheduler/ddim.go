package scheduler

import (
	"fmt"
	"math"
)

// ddim mirrors diffusers' DDIMScheduler (Song et al. 2020, eq. 12 and 16).
// It keeps no history, so steps may be taken in any order.
type ddim struct {
	base
	acp        []float32
	finalACP   float32 // alpha_prod for the step after the last
	stepRatio  int     // num_train_timesteps // num_inference_steps
	eta        float32
	prediction string
	clip       bool
	clipRange  float32
}

func newDDIM(s settings, tr trainSchedule, numSteps int, eta float64) (*ddim, error) {
	if math.IsNaN(eta) || eta < 0 || eta > 1e3 {
		return nil, fmt.Errorf("eta %v out of range [0, 1000]", eta)
	}
	ts, err := spacedTimesteps(s.spacing, s.numTrain, s.numTrain, numSteps, s.stepsOffset, 0)
	if err != nil {
		return nil, err
	}
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	final := tr.alphasCumprod[0]
	if s.setAlphaToOne {
		final = 1
	}
	return &ddim{
		base:       base{timesteps: ts, initSigma: 1, noisy: eta > 0},
		acp:        tr.alphasCumprod,
		finalACP:   final,
		stepRatio:  s.numTrain / numSteps,
		eta:        float32(eta),
		prediction: s.prediction,
		clip:       s.clipSample,
		clipRange:  float32(s.clipRange),
	}, nil
}

func (d *ddim) Step(modelOutput, sample []float32, stepIndex int, noise Noise) ([]float32, error) {
	if err := d.checkStep(modelOutput, sample, stepIndex); err != nil {
		return nil, err
	}
	t := int(d.timesteps[stepIndex])
	// diffusers steps back by the leading ratio whatever the spacing.
	prev := t - d.stepRatio
	aT := d.acp[t]
	aPrev := d.finalACP
	if prev >= 0 {
		aPrev = d.acp[prev]
	}
	betaT := 1 - aT
	sqA, sqB := sqrt32(aT), sqrt32(betaT)

	// sigma_t(eta) of eq. 16; with eta 0 it vanishes.
	variance := float32((1-aPrev)/betaT) * (1 - aT/aPrev)
	std := d.eta * sqrt32(variance)
	dirCoef := sqrt32(1 - aPrev - float32(std*std))
	sqAPrev := sqrt32(aPrev)

	var eps []float32
	if d.eta > 0 {
		var err error
		if eps, err = d.drawNoise(noise, len(sample), stepIndex); err != nil {
			return nil, err
		}
	}
	out := make([]float32, len(sample))
	for i, x := range sample {
		m := modelOutput[i]
		var x0, e float32
		switch d.prediction {
		case "epsilon":
			x0 = (x - float32(sqB*m)) / sqA
			e = m
		case "sample":
			x0 = m
			e = (x - float32(sqA*x0)) / sqB
		default: // v_prediction
			x0 = float32(sqA*x) - float32(sqB*m)
			e = float32(sqA*m) + float32(sqB*x)
		}
		if d.clip {
			x0 = min(max(x0, -d.clipRange), d.clipRange)
		}
		p := float32(sqAPrev*x0) + float32(dirCoef*e)
		if eps != nil {
			p += float32(std * eps[i])
		}
		out[i] = p
	}
	return out, nil
}
