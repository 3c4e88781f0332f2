package scheduler

import (
	"fmt"
	"math"
)

// dpmSolver mirrors diffusers' DPMSolverMultistepScheduler with
// algorithm_type dpmsolver++ (Lu et al. 2022): a data-prediction solver of
// order 1 or 2 that reuses the previous step's model output.
type dpmSolver struct {
	base
	seq             sequence
	prediction      string
	order           int
	solverType      string // midpoint or heun
	lowerOrderFinal bool
	eulerAtFinal    bool
	finalZero       bool

	outputs        [][]float32 // converted model outputs, oldest first
	lowerOrderNums int
}

func newDPMSolver(s settings, tr trainSchedule, numSteps int) (*dpmSolver, error) {
	// lambda_min_clipped drops the tail of the schedule whose log-SNR is
	// below it (searchsorted over the ascending flipped lambdas).
	clipped := 0
	for i := len(tr.alphasCumprod) - 1; i >= 0; i-- {
		a := tr.alphasCumprod[i]
		lambda := log32(sqrt32(a)) - log32(sqrt32(1-a))
		if float64(lambda) < s.lambdaMinClipped {
			clipped++
		}
	}
	last := s.numTrain - clipped
	if last < 1 {
		return nil, fmt.Errorf("field %q: %v clips the whole schedule", "lambda_min_clipped", s.lambdaMinClipped)
	}
	ts, err := spacedTimesteps(s.spacing, last, s.numTrain, numSteps, s.stepsOffset, 1)
	if err != nil {
		return nil, err
	}
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	sig, ts := solverSigmas(s, tr, ts, numSteps, false)
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	lastSigma := 0.0
	if s.finalSigmas == "sigma_min" {
		lastSigma = float64(tr.sigmas[0])
	}
	return &dpmSolver{
		base:            base{timesteps: ts, sigmas: appendFinalSigma(sig, lastSigma), initSigma: 1},
		prediction:      s.prediction,
		order:           s.solverOrder,
		solverType:      s.solverType,
		lowerOrderFinal: s.lowerOrderFinal,
		eulerAtFinal:    s.eulerAtFinal,
		finalZero:       s.finalSigmas == "zero",
	}, nil
}

// solverSigmas returns the sigma table (without the final sigma) and the
// timesteps of the multistep solvers: the training sigmas at the spaced
// timesteps, or a Karras table whose timesteps are read back from the
// training log-sigmas and rounded. unipc selects UniPC's variant, which
// honours sigma_min/sigma_max from the config and always rounds.
func solverSigmas(s settings, tr trainSchedule, ts []float64, numSteps int, unipc bool) ([]float64, []float64) {
	if !s.karras {
		sig := make([]float64, len(ts))
		for i, t := range ts {
			// np.interp at integer timesteps returns the table entries.
			sig[i] = float64(tr.sigmas[int(t)])
		}
		return sig, ts
	}
	lo, hi := float64(tr.sigmas[0]), float64(tr.sigmas[len(tr.sigmas)-1])
	if unipc {
		if s.sigmaMin != nil {
			lo = *s.sigmaMin
		}
		if s.sigmaMax != nil {
			hi = *s.sigmaMax
		}
	}
	sig := karrasSigmas(lo, hi, numSteps)
	logSig := logSigmas(tr.sigmas)
	out := make([]float64, len(sig))
	for i, v := range sig {
		t := sigmaToT(v, logSig)
		if unipc || s.betaSchedule != "squaredcos_cap_v2" {
			t = math.RoundToEven(t)
		}
		// torch.from_numpy(...).to(torch.int64) truncates.
		out[i] = math.Trunc(t)
	}
	return sig, out
}

// alphaSigma is _sigma_to_alpha_sigma_t: the VP coefficients of a sigma.
func alphaSigma(sigma float32) (alpha, sigmaT float32) {
	alpha = 1 / sqrt32(float32(sigma*sigma)+1)
	return alpha, sigma * alpha
}

// lambdaOf is the half log-SNR log(alpha) - log(sigma).
func lambdaOf(alpha, sigma float32) float32 { return log32(alpha) - log32(sigma) }

func (d *dpmSolver) Step(modelOutput, sample []float32, stepIndex int, _ Noise) ([]float32, error) {
	if err := d.checkStep(modelOutput, sample, stepIndex); err != nil {
		return nil, err
	}
	if err := d.seq.check(d.name, stepIndex, len(sample)); err != nil {
		return nil, err
	}
	n := len(d.timesteps)
	// Near the end a first-order step is more stable; with a zero final
	// sigma the last step must be first order (it lands on x0).
	lowerFinal := stepIndex == n-1 && (d.eulerAtFinal || (d.lowerOrderFinal && n < 15) || d.finalZero)

	m0 := d.convert(modelOutput, sample, stepIndex)
	d.outputs = append(d.outputs, m0)
	if len(d.outputs) > d.order {
		d.outputs = d.outputs[len(d.outputs)-d.order:]
	}
	var out []float32
	if d.order == 1 || d.lowerOrderNums < 1 || lowerFinal {
		out = d.firstOrder(m0, sample, stepIndex)
	} else {
		out = d.secondOrder(sample, stepIndex)
	}
	if d.lowerOrderNums < d.order {
		d.lowerOrderNums++
	}
	return out, nil
}

// convert turns the model output into the data prediction x0.
func (d *dpmSolver) convert(modelOutput, sample []float32, stepIndex int) []float32 {
	alpha, sigma := alphaSigma(d.sigmas[stepIndex])
	out := make([]float32, len(sample))
	for i, x := range sample {
		m := modelOutput[i]
		switch d.prediction {
		case "epsilon":
			out[i] = (x - float32(sigma*m)) / alpha
		case "sample":
			out[i] = m
		default: // v_prediction
			out[i] = float32(alpha*x) - float32(sigma*m)
		}
	}
	return out
}

// firstOrder is DPM-Solver++(1), which equals DDIM.
func (d *dpmSolver) firstOrder(m0, sample []float32, stepIndex int) []float32 {
	alphaT, sigmaT := alphaSigma(d.sigmas[stepIndex+1])
	alphaS, sigmaS := alphaSigma(d.sigmas[stepIndex])
	h := lambdaOf(alphaT, sigmaT) - lambdaOf(alphaS, sigmaS)
	ratio := sigmaT / sigmaS
	c := alphaT * (exp32(-h) - 1)
	out := make([]float32, len(sample))
	for i, x := range sample {
		out[i] = float32(ratio*x) - float32(c*m0[i])
	}
	return out
}

// secondOrder is the multistep DPM-Solver++(2M) update.
func (d *dpmSolver) secondOrder(sample []float32, stepIndex int) []float32 {
	m0, m1 := d.outputs[len(d.outputs)-1], d.outputs[len(d.outputs)-2]
	alphaT, sigmaT := alphaSigma(d.sigmas[stepIndex+1])
	alphaS0, sigmaS0 := alphaSigma(d.sigmas[stepIndex])
	alphaS1, sigmaS1 := alphaSigma(d.sigmas[stepIndex-1])
	lambdaT := lambdaOf(alphaT, sigmaT)
	lambdaS0 := lambdaOf(alphaS0, sigmaS0)
	lambdaS1 := lambdaOf(alphaS1, sigmaS1)
	h, h0 := lambdaT-lambdaS0, lambdaS0-lambdaS1
	r0 := h0 / h
	invR0 := 1 / r0
	ratio := sigmaT / sigmaS0
	c := alphaT * (exp32(-h) - 1)
	var c1 float32
	if d.solverType == "midpoint" {
		c1 = 0.5 * c
	} else { // heun
		c1 = alphaT * ((exp32(-h)-1)/h + 1)
	}
	out := make([]float32, len(sample))
	for i, x := range sample {
		d1 := float32(invR0 * (m0[i] - m1[i]))
		v := float32(ratio*x) - float32(c*m0[i])
		if d.solverType == "midpoint" {
			v = v - float32(c1*d1)
		} else {
			v = v + float32(c1*d1)
		}
		out[i] = v
	}
	return out
}
