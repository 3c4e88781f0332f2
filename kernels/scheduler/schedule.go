package scheduler

import (
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/internal/fma"
)

// This file builds the training noise schedule and the inference timestep
// and sigma tables. diffusers builds them with a mix of torch float32
// tensors and numpy float64 arrays; every helper here says which one it
// mirrors, because matching the golden references to 1e-5 over 20 steps
// depends on rounding at the same places.

// trainSchedule is what a diffusers scheduler computes in __init__.
type trainSchedule struct {
	alphasCumprod []float32 // torch.cumprod(1 - betas), float32
	sigmas        []float32 // ((1 - acp) / acp) ** 0.5, float32, ascending in t
}

// newTrainSchedule mirrors the betas/alphas_cumprod code every diffusers
// scheduler shares.
func newTrainSchedule(s settings) (trainSchedule, error) {
	n := s.numTrain
	var betas []float32
	switch {
	case s.trainedBetas != nil:
		// torch.tensor(trained_betas, dtype=torch.float32)
		betas = make([]float32, len(s.trainedBetas))
		for i, b := range s.trainedBetas {
			betas[i] = float32(b)
		}
	case s.betaSchedule == "linear":
		betas = torchLinspace32(s.betaStart, s.betaEnd, n)
	case s.betaSchedule == "scaled_linear":
		// torch.linspace(beta_start**0.5, beta_end**0.5, n) ** 2
		betas = torchLinspace32(math.Sqrt(s.betaStart), math.Sqrt(s.betaEnd), n)
		for i, b := range betas {
			betas[i] = b * b
		}
	case s.betaSchedule == "squaredcos_cap_v2":
		betas = cosineBetas(n)
	default:
		return trainSchedule{}, fmt.Errorf("field %q: unsupported value %q", "beta_schedule", s.betaSchedule)
	}
	acp := make([]float32, len(betas))
	sigmas := make([]float32, len(betas))
	// torch's CPU cumprod accumulates in double (acc_type<float, false>) and
	// rounds each partial product to float32 on store.
	prod := 1.0
	for i, b := range betas {
		alpha := 1 - b
		prod *= float64(alpha)
		acp[i] = float32(prod)
		if acp[i] <= 0 {
			return trainSchedule{}, fmt.Errorf("betas: alphas_cumprod reaches zero at training step %d", i)
		}
		sigmas[i] = sqrt32((1 - acp[i]) / acp[i])
	}
	return trainSchedule{alphasCumprod: acp, sigmas: sigmas}, nil
}

// linspaceVec is the float32 SIMD width of torch's CPU kernels on an
// AVX-512 machine like the one the references were made on (AVX2 gives 8;
// the Stable Diffusion schedules come out the same either way).
const linspaceVec = 16

// torchLinspace32 mirrors torch.linspace(start, end, steps,
// dtype=torch.float32) on CPU (RangeFactoriesKernel.cpp): the step is a
// float32; the first half counts up from start, the second half down from
// end. The vectorised loop fills two SIMD vectors per iteration, each as
// base + lane*step from a base computed at its first index; the tail is
// filled element by element. The compiler contracts every a + b*c there
// into a fused multiply-add, so this rounds once per value the same way.
func torchLinspace32(start, end float64, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = float32(start)
		return out
	}
	s, e := float32(start), float32(end)
	step := float32(e-s) / float32(steps-1)
	half := steps / 2
	at := func(i int) float32 {
		if i < half {
			return fma.F32(step, float32(i), s)
		}
		return fma.F32(-step, float32(steps-i-1), e)
	}
	vec := linspaceVec
	i := 0
	for ; i+2*vec <= steps; i += 2 * vec {
		for _, v := range [2]int{i, i + vec} {
			base := at(v)
			for lane := range vec {
				out[v+lane] = fma.F32(float32(lane), step, base)
			}
		}
	}
	for ; i < steps; i++ {
		out[i] = at(i)
	}
	return out
}

// cosineBetas mirrors betas_for_alpha_bar(n) (Glide's cosine schedule),
// computed in float64 and stored as a float32 tensor.
func cosineBetas(n int) []float32 {
	alphaBar := func(t float64) float64 {
		c := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
		return c * c
	}
	out := make([]float32, n)
	for i := range out {
		t1 := float64(i) / float64(n)
		t2 := float64(i+1) / float64(n)
		out[i] = float32(math.Min(1-alphaBar(t2)/alphaBar(t1), 0.999))
	}
	return out
}

// npLinspace mirrors np.linspace(start, stop, num) in float64: i*step +
// start, with the last element set to stop exactly.
func npLinspace(start, stop float64, num int) []float64 {
	out := make([]float64, num)
	if num == 0 {
		return out
	}
	if num == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(num-1)
	for i := range out {
		out[i] = float64(float64(i)*step) + start
	}
	out[num-1] = stop
	return out
}

// npArange mirrors np.arange(start, stop, step) for a float step: numpy
// stores start and start+step, then fills start + i*delta with delta taken
// from those two, so the rounding follows that recipe.
func npArange(start, stop, step float64) []float64 {
	n := int(math.Ceil((stop - start) / step))
	if n <= 0 {
		return nil
	}
	out := make([]float64, n)
	out[0] = start
	if n > 1 {
		out[1] = start + step
		delta := out[1] - out[0]
		for i := 2; i < n; i++ {
			out[i] = start + float64(float64(i)*delta)
		}
	}
	return out
}

// npInterpIndex mirrors np.interp(x, np.arange(len(fp)), fp) in float64.
func npInterpIndex(x float64, fp []float64) float64 {
	last := len(fp) - 1
	switch {
	case math.IsNaN(x):
		return x
	case x <= 0:
		return fp[0]
	case x >= float64(last):
		return fp[last]
	}
	j := int(math.Floor(x))
	if float64(j) == x {
		return fp[j]
	}
	slope := fp[j+1] - fp[j]
	return float64(slope*(x-float64(j))) + fp[j]
}

// spacedTimesteps returns the integer-valued timesteps (high to low) that
// DDIM and PNDM build for num steps (extra 0), or that the multistep
// solvers build (extra 1: they space num+1 points and drop the lowest).
// last is the number of usable training steps (the DPM solver clips it with
// lambda_min_clipped; otherwise it is numTrain).
func spacedTimesteps(spacing string, last, numTrain, num, offset, extra int) ([]float64, error) {
	out := make([]float64, 0, num)
	switch spacing {
	case "linspace":
		// np.linspace(0, last-1, num+extra).round()[::-1][:num]
		pts := npLinspace(0, float64(last-1), num+extra)
		for i := len(pts) - 1; i >= extra; i-- {
			out = append(out, math.RoundToEven(pts[i]))
		}
	case "leading":
		// (np.arange(0, num+extra) * (last // (num+extra)))[::-1][:num] + offset
		ratio := last / (num + extra)
		for i := num + extra - 1; i >= extra; i-- {
			out = append(out, float64(i*ratio+offset))
		}
	case "trailing":
		// np.arange(last, 0, -numTrain/num).round() - 1
		for _, t := range npArange(float64(last), 0, -float64(numTrain)/float64(num)) {
			out = append(out, math.RoundToEven(t)-1)
		}
	default:
		return nil, fmt.Errorf("field %q: unsupported value %q", "timestep_spacing", spacing)
	}
	if len(out) != num {
		// numpy's arange overshoots by one element for some step counts
		// (61 of 1000, for one); diffusers then indexes outside its tables.
		return nil, fmt.Errorf("field %q: %s spacing gives %d timesteps for %d steps", "timestep_spacing", spacing, len(out), num)
	}
	return out, nil
}

// checkTimesteps refuses timesteps that index outside the training
// schedule (diffusers would raise IndexError mid-generation).
func checkTimesteps(ts []float64, numTrain int) error {
	for i, t := range ts {
		if t < 0 || t > float64(numTrain-1) || math.IsNaN(t) {
			return fmt.Errorf("timestep %d = %v outside the training schedule [0, %d] (check steps_offset and timestep_spacing)", i, t, numTrain-1)
		}
	}
	return nil
}

// karrasSigmas mirrors _convert_to_karras: rho = 7 interpolation between
// sigma_max and sigma_min in numpy float64.
func karrasSigmas(sigmaMin, sigmaMax float64, num int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, num)
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	out := make([]float64, num)
	for i, r := range ramp {
		out[i] = math.Pow(maxInv+float64(r*(minInv-maxInv)), rho)
	}
	return out
}

// logSigmas is np.log of the float32 training sigmas (a float32 array).
func logSigmas(sigmas []float32) []float32 {
	out := make([]float32, len(sigmas))
	for i, s := range sigmas {
		out[i] = float32(math.Log(float64(s)))
	}
	return out
}

// sigmaToT mirrors _sigma_to_t: the fractional training timestep whose
// log-sigma interpolates to sigma. logSig holds float32 values and the
// numpy arithmetic mixes float32 scalars into float64 the same way.
func sigmaToT(sigma float64, logSig []float32) float64 {
	logSigma := math.Log(math.Max(sigma, 1e-10))
	// low is the last index whose log-sigma is <= logSigma (0 if none),
	// clipped so that low+1 stays in range.
	low := 0
	for i, ls := range logSig {
		if logSigma-float64(ls) >= 0 {
			low = i
		}
	}
	low = min(low, len(logSig)-2)
	high := low + 1
	lo, hi := logSig[low], logSig[high]
	w := (float64(lo) - logSigma) / float64(lo-hi)
	w = math.Min(math.Max(w, 0), 1)
	return float64((1-w)*float64(low)) + float64(w*float64(high))
}

// appendFinalSigma appends the sigma after the last step (final_sigmas_type)
// and casts the table to float32, as np.concatenate(...).astype(float32).
func appendFinalSigma(sigmas []float64, last float64) []float32 {
	out := make([]float32, len(sigmas)+1)
	for i, s := range sigmas {
		out[i] = float32(s)
	}
	out[len(sigmas)] = float32(last)
	return out
}

// float32 scalar helpers: torch evaluates these on 0-d float32 tensors.
func sqrt32(x float32) float32  { return float32(math.Sqrt(float64(x))) }
func log32(x float32) float32   { return float32(math.Log(float64(x))) }
func exp32(x float32) float32   { return float32(math.Exp(float64(x))) }
func expm132(x float32) float32 { return float32(math.Expm1(float64(x))) }
