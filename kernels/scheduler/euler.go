package scheduler

import "slices"

// euler mirrors diffusers' EulerDiscreteScheduler (Karras et al. 2022,
// algorithm 2 without churn) and, with ancestral set,
// EulerAncestralDiscreteScheduler. Both work in sigma space: the model
// input is scaled to unit variance and the model gets fractional
// timesteps. Neither keeps history.
type euler struct {
	base
	ancestral  bool
	prediction string
}

func newEuler(s settings, tr trainSchedule, numSteps int, ancestral bool) (*euler, error) {
	ts, err := eulerTimesteps(s, numSteps)
	if err != nil {
		return nil, err
	}
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	train := make([]float64, len(tr.sigmas))
	for i, v := range tr.sigmas {
		train[i] = float64(v)
	}
	sig := make([]float64, len(ts))
	for i, t := range ts {
		sig[i] = npInterpIndex(t, train)
	}
	last := 0.0
	if !ancestral {
		if s.karras {
			// EulerDiscrete's Karras ends come from the interpolated table
			// (so they follow the spacing) unless the config pins them;
			// the timesteps stay fractional.
			lo, hi := sig[len(sig)-1], sig[0]
			if s.sigmaMin != nil {
				lo = *s.sigmaMin
			}
			if s.sigmaMax != nil {
				hi = *s.sigmaMax
			}
			sig = karrasSigmas(lo, hi, numSteps)
			logSig := logSigmas(tr.sigmas)
			for i, v := range sig {
				ts[i] = float64(float32(sigmaToT(v, logSig)))
			}
		}
		if s.finalSigmas == "sigma_min" {
			last = float64(tr.sigmas[0])
		}
	}
	sigmas := appendFinalSigma(sig, last)
	// init_noise_sigma: the largest sigma, or the variance of x_T + noise
	// of that sigma for the leading spacing.
	maxSigma := slices.Max(sigmas)
	init := maxSigma
	if s.spacing == "leading" {
		init = sqrt32(float32(maxSigma*maxSigma) + 1)
	}
	return &euler{
		base: base{
			timesteps:  ts,
			floatSteps: true,
			sigmas:     sigmas,
			initSigma:  init,
			noisy:      ancestral,
		},
		ancestral:  ancestral,
		prediction: s.prediction,
	}, nil
}

// eulerTimesteps are the Euler family's float32 timesteps, high to low.
func eulerTimesteps(s settings, numSteps int) ([]float64, error) {
	if s.spacing == "linspace" {
		// np.linspace(0, T-1, n, dtype=np.float32)[::-1]: computed in
		// float64, stored as float32, not rounded.
		pts := npLinspace(0, float64(s.numTrain-1), numSteps)
		out := make([]float64, numSteps)
		for i, p := range pts {
			out[numSteps-1-i] = float64(float32(p))
		}
		return out, nil
	}
	// leading and trailing give DDIM's integer timesteps as float32 (the
	// leading offset is added after the cast, trailing subtracts one).
	return spacedTimesteps(s.spacing, s.numTrain, s.numTrain, numSteps, s.stepsOffset, 0)
}

func (e *euler) ScaleModelInput(sample []float32, stepIndex int) ([]float32, error) {
	if err := e.checkIndex(stepIndex); err != nil {
		return nil, err
	}
	sigma := e.sigmas[stepIndex]
	scale := sqrt32(float32(sigma*sigma) + 1)
	out := make([]float32, len(sample))
	for i, x := range sample {
		out[i] = x / scale
	}
	return out, nil
}

func (e *euler) Step(modelOutput, sample []float32, stepIndex int, noise Noise) ([]float32, error) {
	if err := e.checkStep(modelOutput, sample, stepIndex); err != nil {
		return nil, err
	}
	sigma := e.sigmas[stepIndex]
	next := e.sigmas[stepIndex+1]
	// v_prediction's denoised = model_output * c_out + sample * c_skip.
	sigSq1 := float32(sigma*sigma) + 1
	cOut := -sigma / sqrt32(sigSq1)

	// Plain Euler steps to the next sigma; the ancestral variant steps to
	// sigma_down and adds fresh noise of sigma_up.
	dt := next - sigma
	var up float32
	var eps []float32
	if e.ancestral {
		up = sqrt32(float32(float32(next*next)*float32(float32(sigma*sigma)-float32(next*next))) / float32(sigma*sigma))
		down := sqrt32(float32(next*next) - float32(up*up))
		dt = down - sigma
		var err error
		if eps, err = e.drawNoise(noise, len(sample), stepIndex); err != nil {
			return nil, err
		}
	}
	out := make([]float32, len(sample))
	for i, x := range sample {
		m := modelOutput[i]
		var x0 float32
		switch e.prediction {
		case "epsilon":
			x0 = x - float32(sigma*m)
		case "sample":
			x0 = m
		default: // v_prediction
			x0 = float32(m*cOut) + x/sigSq1
		}
		d := (x - x0) / sigma
		p := x + float32(d*dt)
		if eps != nil {
			p += float32(eps[i] * up)
		}
		out[i] = p
	}
	return out, nil
}
