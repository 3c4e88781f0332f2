package scheduler

import (
	"fmt"
	"slices"
)

// pndm mirrors diffusers' PNDMScheduler with skip_prk_steps: the linear
// multistep (PLMS) part of Liu et al. 2022, warmed up as crowsonkb's PLMS
// sampler does, by repeating the second timestep.
type pndm struct {
	base
	seq        sequence
	acp        []float32
	finalACP   float32
	stepRatio  int
	prediction string

	ets       [][]float32 // past model outputs, oldest first (at most 4)
	curSample []float32   // sample of the first step, reused by the second
}

func newPNDM(s settings, tr trainSchedule, numSteps int) (*pndm, error) {
	desc, err := spacedTimesteps(s.spacing, s.numTrain, s.numTrain, numSteps, s.stepsOffset, 0)
	if err != nil {
		return nil, err
	}
	// plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1] over the
	// ascending timesteps: the descending list with its second entry
	// repeated.
	ts := desc
	if len(desc) > 1 {
		ts = slices.Insert(slices.Clone(desc), 1, desc[1])
	}
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	final := tr.alphasCumprod[0]
	if s.setAlphaToOne {
		final = 1
	}
	return &pndm{
		base:       base{timesteps: ts, initSigma: 1},
		acp:        tr.alphasCumprod,
		finalACP:   final,
		stepRatio:  s.numTrain / numSteps,
		prediction: s.prediction,
	}, nil
}

func (p *pndm) Step(modelOutput, sample []float32, stepIndex int, _ Noise) ([]float32, error) {
	if err := p.checkStep(modelOutput, sample, stepIndex); err != nil {
		return nil, err
	}
	if err := p.seq.check(p.name, stepIndex, len(sample)); err != nil {
		return nil, err
	}
	counter := stepIndex // diffusers' self.counter: one per step taken
	t := int(p.timesteps[stepIndex])
	prev := t - p.stepRatio
	if counter != 1 {
		if len(p.ets) > 3 {
			p.ets = p.ets[len(p.ets)-3:]
		}
		p.ets = append(p.ets, slices.Clone(modelOutput))
	} else {
		// The repeated timestep redoes the first step with the average of
		// the two model outputs (a second-order warm-up).
		prev = t
		t += p.stepRatio
	}
	if t >= len(p.acp) {
		return nil, fmt.Errorf("scheduler %s: step %d: timestep %d outside the training schedule", p.name, stepIndex, t)
	}

	n := len(sample)
	x := sample
	m := make([]float32, n)
	e := p.ets
	k := len(e)
	switch {
	case k == 1 && counter == 0:
		copy(m, modelOutput)
		p.curSample = slices.Clone(sample)
	case k == 1 && counter == 1:
		for i := range m {
			m[i] = (modelOutput[i] + e[0][i]) / 2
		}
		x = p.curSample
		p.curSample = nil
	case k == 2:
		for i := range m {
			m[i] = (float32(3*e[1][i]) - e[0][i]) / 2
		}
	case k == 3:
		for i := range m {
			m[i] = (float32(float32(23*e[2][i])-float32(16*e[1][i])) + float32(5*e[0][i])) / 12
		}
	default:
		const c = float32(1.0 / 24)
		for i := range m {
			s := float32(float32(55*e[3][i]) - float32(59*e[2][i]))
			s = float32(s + float32(37*e[1][i]))
			s = float32(s - float32(9*e[0][i]))
			m[i] = c * s
		}
	}
	out := p.prevSample(x, t, prev, m)
	return out, nil
}

// prevSample is eq. 9 of the PNDM paper (diffusers' _get_prev_sample).
func (p *pndm) prevSample(x []float32, t, prev int, m []float32) []float32 {
	aT := p.acp[t]
	aPrev := p.finalACP
	if prev >= 0 {
		aPrev = p.acp[prev]
	}
	betaT := 1 - aT
	betaPrev := 1 - aPrev
	sqA, sqB := sqrt32(aT), sqrt32(betaT)
	sampleCoeff := sqrt32(aPrev / aT)
	denom := float32(aT*sqrt32(betaPrev)) + sqrt32(float32(aT*betaT)*aPrev)
	diff := aPrev - aT
	out := make([]float32, len(x))
	for i, xi := range x {
		mi := m[i]
		if p.prediction == "v_prediction" {
			mi = float32(sqA*mi) + float32(sqB*xi)
		}
		out[i] = float32(sampleCoeff*xi) - float32(diff*mi)/denom
	}
	return out
}
