package scheduler

import (
	"fmt"
	"math"
	"slices"
)

// uniPC mirrors diffusers' UniPCMultistepScheduler (Zhao et al. 2023): a
// multistep predictor (UniP) followed, at the next step, by a corrector
// (UniC) that reuses the new model output to refine the sample the
// predictor produced, with B(h) variant bh1 or bh2.
type uniPC struct {
	base
	seq              sequence
	prediction       string
	order            int
	bh1              bool
	predictX0        bool
	lowerOrderFinal  bool
	disableCorrector []int

	outputs        [][]float32 // converted model outputs, oldest first
	lowerOrderNums int
	lastSample     []float32 // the sample the last predictor started from
	thisOrder      int       // the last predictor's order
}

func newUniPC(s settings, tr trainSchedule, numSteps int) (*uniPC, error) {
	if !s.lowerOrderFinal && s.finalSigmas == "zero" && s.solverOrder > 1 {
		// diffusers divides by a zero log-SNR ratio on the last step and
		// returns NaN latents.
		return nil, fmt.Errorf("field %q: false with final_sigmas_type \"zero\" gives NaN on the last step", "lower_order_final")
	}
	ts, err := spacedTimesteps(s.spacing, s.numTrain, s.numTrain, numSteps, s.stepsOffset, 1)
	if err != nil {
		return nil, err
	}
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	sig, ts := solverSigmas(s, tr, ts, numSteps, true)
	if err := checkTimesteps(ts, s.numTrain); err != nil {
		return nil, err
	}
	lastSigma := 0.0
	if s.finalSigmas == "sigma_min" {
		if s.karras {
			lastSigma = sig[len(sig)-1]
		} else {
			lastSigma = float64(tr.sigmas[0])
		}
	}
	return &uniPC{
		base:             base{timesteps: ts, sigmas: appendFinalSigma(sig, lastSigma), initSigma: 1},
		prediction:       s.prediction,
		order:            s.solverOrder,
		bh1:              s.solverType == "bh1",
		predictX0:        s.predictX0,
		lowerOrderFinal:  s.lowerOrderFinal,
		disableCorrector: s.disableCorrector,
	}, nil
}

func (u *uniPC) Step(modelOutput, sample []float32, stepIndex int, _ Noise) ([]float32, error) {
	if err := u.checkStep(modelOutput, sample, stepIndex); err != nil {
		return nil, err
	}
	if err := u.seq.check(u.name, stepIndex, len(sample)); err != nil {
		return nil, err
	}
	mc := u.convert(modelOutput, sample, stepIndex)
	x := sample
	if stepIndex > 0 && !slices.Contains(u.disableCorrector, stepIndex-1) && u.lastSample != nil {
		x = u.correct(mc, stepIndex)
	}
	u.outputs = append(u.outputs, mc)
	if len(u.outputs) > u.order {
		u.outputs = u.outputs[len(u.outputs)-u.order:]
	}
	order := u.order
	if u.lowerOrderFinal {
		order = min(order, len(u.timesteps)-stepIndex)
	}
	u.thisOrder = min(order, u.lowerOrderNums+1) // warm-up
	u.lastSample = slices.Clone(x)
	out := u.predict(x, stepIndex)
	if u.lowerOrderNums < u.order {
		u.lowerOrderNums++
	}
	return out, nil
}

// convert turns the model output into the data prediction x0 (predict_x0)
// or the noise prediction.
func (u *uniPC) convert(modelOutput, sample []float32, stepIndex int) []float32 {
	alpha, sigma := alphaSigma(u.sigmas[stepIndex])
	out := make([]float32, len(sample))
	for i, x := range sample {
		m := modelOutput[i]
		switch {
		case u.prediction == "sample" && u.predictX0, u.prediction == "epsilon" && !u.predictX0:
			out[i] = m
		case u.prediction == "epsilon":
			out[i] = (x - float32(sigma*m)) / alpha
		case u.prediction == "sample":
			out[i] = (x - float32(alpha*m)) / sigma
		case u.predictX0: // v_prediction
			out[i] = float32(alpha*x) - float32(sigma*m)
		default:
			out[i] = float32(alpha*m) + float32(sigma*x)
		}
	}
	return out
}

// bh holds the step coefficients shared by predictor and corrector.
type bh struct {
	hh, hPhi1, bH float32
	ratio, cM0    float32 // x_t_ = ratio*x - cM0*m0
	cRes          float32 // x_t = x_t_ - cRes*residual
}

// coefficients computes the step from sigma index s to index t.
func (u *uniPC) coefficients(s, t int) (bh, float32, float32) {
	alphaT, sigmaT := alphaSigma(u.sigmas[t])
	alphaS, sigmaS := alphaSigma(u.sigmas[s])
	lambdaT, lambdaS := lambdaOf(alphaT, sigmaT), lambdaOf(alphaS, sigmaS)
	h := lambdaT - lambdaS
	var c bh
	c.hh = h
	if u.predictX0 {
		c.hh = -h
	}
	c.hPhi1 = expm132(c.hh)
	c.bH = c.hh
	if !u.bh1 {
		c.bH = expm132(c.hh)
	}
	if u.predictX0 {
		c.ratio = sigmaT / sigmaS
		c.cM0 = alphaT * c.hPhi1
		c.cRes = alphaT * c.bH
	} else {
		c.ratio = alphaT / alphaS
		c.cM0 = sigmaT * c.hPhi1
		c.cRes = sigmaT * c.bH
	}
	return c, h, lambdaS
}

// rk is the log-SNR step ratio of an older history entry.
func (u *uniPC) rk(sigmaIndex int, lambdaS0, h float32) float32 {
	a, s := alphaSigma(u.sigmas[sigmaIndex])
	return (lambdaOf(a, s) - lambdaS0) / h
}

// predict is UniP-p (multistep_uni_p_bh_update) from sample at stepIndex
// to stepIndex+1, of order u.thisOrder (1 or 2).
func (u *uniPC) predict(x []float32, stepIndex int) []float32 {
	c, h, lambdaS0 := u.coefficients(stepIndex, stepIndex+1)
	m0 := u.outputs[len(u.outputs)-1]
	var m1 []float32
	var rk float32
	if u.thisOrder == 2 {
		m1 = u.outputs[len(u.outputs)-2]
		rk = u.rk(stepIndex-1, lambdaS0, h)
	}
	const rho = float32(0.5) // diffusers' fixed rhos_p for order 2
	out := make([]float32, len(x))
	for i, xi := range x {
		v := float32(c.ratio*xi) - float32(c.cM0*m0[i])
		if m1 != nil {
			d1 := (m1[i] - m0[i]) / rk
			v = v - float32(c.cRes*float32(rho*d1))
		}
		out[i] = v
	}
	return out
}

// correct is UniC-p (multistep_uni_c_bh_update): it redoes the last
// predictor step, from u.lastSample at stepIndex-1 to stepIndex, using
// this step's converted model output mc, at the last predictor's order.
// Its result replaces the predicted sample.
func (u *uniPC) correct(mc []float32, stepIndex int) []float32 {
	c, h, lambdaS0 := u.coefficients(stepIndex-1, stepIndex)
	m0 := u.outputs[len(u.outputs)-1]
	order := u.thisOrder
	var m1 []float32
	var rk float32
	rks := []float32{1}
	if order == 2 {
		m1 = u.outputs[len(u.outputs)-2]
		rk = u.rk(stepIndex-2, lambdaS0, h)
		rks = []float32{rk, 1}
	}
	var rhos []float32
	if order == 1 {
		rhos = []float32{0.5}
	} else {
		// b_k = h_phi_k * k! / B(h), h_phi_{k+1} = h_phi_k / hh - 1/(k+1)!
		b := make([]float32, order)
		r := make([][]float32, order)
		hPhiK := c.hPhi1/c.hh - 1
		factorial := 1
		for k := 1; k <= order; k++ {
			r[k-1] = make([]float32, order)
			for j, v := range rks {
				r[k-1][j] = pow32(v, k-1)
			}
			b[k-1] = hPhiK * float32(factorial) / c.bH
			factorial *= k + 1
			hPhiK = hPhiK/c.hh - float32(1/float64(factorial))
		}
		rhos = solve32(r, b)
	}
	x := u.lastSample
	last := rhos[len(rhos)-1]
	out := make([]float32, len(x))
	for i, xi := range x {
		v := float32(c.ratio*xi) - float32(c.cM0*m0[i])
		d1t := mc[i] - m0[i]
		res := float32(last * d1t)
		if m1 != nil {
			d1 := (m1[i] - m0[i]) / rk
			res = float32(rhos[0]*d1) + res
		}
		out[i] = v - float32(c.cRes*res)
	}
	return out
}

// pow32 is torch.pow on a float32 tensor with a small integer exponent.
func pow32(v float32, k int) float32 {
	switch k {
	case 0:
		return 1
	case 1:
		return v
	}
	return float32(math.Pow(float64(v), float64(k)))
}

// solve32 solves the small system a·x = b in float32 by LU with partial
// pivoting, the way LAPACK's sgesv orders its operations (pivot rows
// scaled by the reciprocal of the pivot, back substitution by division).
func solve32(a [][]float32, b []float32) []float32 {
	n := len(b)
	m := make([][]float32, n)
	for i := range a {
		m[i] = slices.Clone(a[i])
	}
	x := slices.Clone(b)
	for col := 0; col < n; col++ {
		p := col
		for r := col + 1; r < n; r++ {
			if abs32(m[r][col]) > abs32(m[p][col]) {
				p = r
			}
		}
		m[col], m[p] = m[p], m[col]
		x[col], x[p] = x[p], x[col]
		if m[col][col] == 0 {
			continue // singular: leave the NaN/Inf torch would produce
		}
		inv := 1 / m[col][col]
		for r := col + 1; r < n; r++ {
			l := m[r][col] * inv
			m[r][col] = l
			for k := col + 1; k < n; k++ {
				m[r][k] -= float32(l * m[col][k])
			}
			x[r] -= float32(l * x[col])
		}
	}
	for r := n - 1; r >= 0; r-- {
		s := x[r]
		for k := r + 1; k < n; k++ {
			s -= float32(m[r][k] * x[k])
		}
		x[r] = s / m[r][r]
	}
	return x
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }
