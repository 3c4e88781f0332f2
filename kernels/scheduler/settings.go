package scheduler

import (
	"fmt"
	"math"
	"slices"
)

// kind is a diffusers scheduler class.
type kind int

const (
	kindDDIM kind = iota
	kindPNDM
	kindEuler
	kindEulerA
	kindDPM
	kindUniPC
)

var kinds = map[string]kind{
	DDIM:          kindDDIM,
	PNDM:          kindPNDM,
	Euler:         kindEuler,
	EulerA:        kindEulerA,
	DPMPP2M:       kindDPM,
	DPMPP2MKarras: kindDPM,
	UniPC:         kindUniPC,
}

// settings is a Config resolved for one scheduler class: the config's
// values where present, the class's __init__ defaults (diffusers 0.40)
// elsewhere.
type settings struct {
	numTrain      int
	betaStart     float64
	betaEnd       float64
	betaSchedule  string
	trainedBetas  []float64
	prediction    string
	spacing       string
	stepsOffset   int
	clipSample    bool
	clipRange     float64
	setAlphaToOne bool

	// multistep solvers
	solverOrder      int
	solverType       string
	lowerOrderFinal  bool
	eulerAtFinal     bool
	finalSigmas      string
	lambdaMinClipped float64
	predictX0        bool
	disableCorrector []int

	// sigma tables
	karras   bool
	sigmaMin *float64
	sigmaMax *float64
}

func pick[T any](v *T, def T) T {
	if v != nil {
		return *v
	}
	return def
}

// resolve applies class defaults and refuses the options this package does
// not implement for that class, naming the field. Options a class does not
// take in diffusers are ignored for it, as from_config ignores them.
func resolve(c Config, k kind) (settings, error) {
	s := settings{
		numTrain:     pick(c.NumTrainTimesteps, 1000),
		betaStart:    pick(c.BetaStart, 0.0001),
		betaEnd:      pick(c.BetaEnd, 0.02),
		betaSchedule: pick(c.BetaSchedule, "linear"),
		trainedBetas: slices.Clone(c.TrainedBetas),
		prediction:   pick(c.PredictionType, "epsilon"),
		stepsOffset:  pick(c.StepsOffset, 0),
	}
	if s.trainedBetas != nil && len(s.trainedBetas) != s.numTrain {
		// diffusers would index past one table or the other.
		return s, fmt.Errorf("field %q: %d betas for num_train_timesteps %d", "trained_betas", len(s.trainedBetas), s.numTrain)
	}
	unsupported := func(field string, v any) error {
		return fmt.Errorf("field %q: %v is not supported", field, v)
	}
	isTrue := func(b *bool) bool { return b != nil && *b }

	// Options read by every class but PNDM.
	if k != kindPNDM && isTrue(c.RescaleZeroSNR) {
		return s, unsupported("rescale_betas_zero_snr", true)
	}
	// Dynamic thresholding only applies to pixel-space models, never to
	// latent diffusion; the classes that implement it here refuse it.
	if (k == kindDDIM || k == kindDPM || k == kindUniPC) && isTrue(c.Thresholding) {
		return s, unsupported("thresholding", true)
	}

	switch k {
	case kindDDIM:
		s.spacing = pick(c.TimestepSpacing, "leading")
		s.clipSample = pick(c.ClipSample, true)
		s.clipRange = pick(c.ClipSampleRange, 1.0)
		s.setAlphaToOne = pick(c.SetAlphaToOne, true)
	case kindPNDM:
		s.spacing = pick(c.TimestepSpacing, "leading")
		s.setAlphaToOne = pick(c.SetAlphaToOne, false)
		if !pick(c.SkipPRKSteps, false) {
			return s, fmt.Errorf("field %q: false (Runge-Kutta warm-up steps) is not supported; Stable Diffusion configs set it true", "skip_prk_steps")
		}
		if s.prediction == "sample" {
			return s, unsupported("prediction_type", s.prediction)
		}
	case kindEuler:
		s.spacing = pick(c.TimestepSpacing, "linspace")
		s.finalSigmas = pick(c.FinalSigmasType, "zero")
		s.karras = pick(c.UseKarrasSigmas, false)
		s.sigmaMin, s.sigmaMax = c.SigmaMin, c.SigmaMax
		if v := pick(c.InterpolationType, "linear"); v != "linear" {
			return s, unsupported("interpolation_type", v)
		}
		if pick(c.TimestepType, "discrete") == "continuous" && s.prediction == "v_prediction" {
			return s, unsupported("timestep_type", "continuous with v_prediction")
		}
		if err := refuseSigmaKinds(c, false); err != nil {
			return s, err
		}
	case kindEulerA:
		s.spacing = pick(c.TimestepSpacing, "linspace")
		if s.prediction == "sample" {
			return s, unsupported("prediction_type", s.prediction)
		}
	case kindDPM:
		s.spacing = pick(c.TimestepSpacing, "linspace")
		s.solverOrder = pick(c.SolverOrder, 2)
		s.lowerOrderFinal = pick(c.LowerOrderFinal, true)
		s.eulerAtFinal = pick(c.EulerAtFinal, false)
		s.finalSigmas = pick(c.FinalSigmasType, "zero")
		s.lambdaMinClipped = pick(c.LambdaMinClipped, math.Inf(-1))
		s.karras = pick(c.UseKarrasSigmas, false)
		// diffusers maps the UniPC/DEIS solver names onto its own.
		switch v := pick(c.AlgorithmType, "dpmsolver++"); v {
		case "dpmsolver++", "deis":
		default:
			return s, unsupported("algorithm_type", v)
		}
		switch v := pick(c.SolverType, "midpoint"); v {
		case "heun":
			s.solverType = "heun"
		default: // midpoint, and logrho/bh1/bh2 which diffusers remaps
			s.solverType = "midpoint"
		}
		if s.solverOrder > 2 {
			return s, unsupported("solver_order", s.solverOrder)
		}
		if v := pick(c.VarianceType, ""); v == "learned" || v == "learned_range" {
			return s, unsupported("variance_type", v)
		}
		if isTrue(c.UseLuLambdas) {
			return s, unsupported("use_lu_lambdas", true)
		}
		if err := refuseSigmaKinds(c, true); err != nil {
			return s, err
		}
	case kindUniPC:
		s.spacing = pick(c.TimestepSpacing, "linspace")
		s.solverOrder = pick(c.SolverOrder, 2)
		s.lowerOrderFinal = pick(c.LowerOrderFinal, true)
		s.finalSigmas = pick(c.FinalSigmasType, "zero")
		s.predictX0 = pick(c.PredictX0, true)
		s.disableCorrector = slices.Clone(c.DisableCorrector)
		s.karras = pick(c.UseKarrasSigmas, false)
		s.sigmaMin, s.sigmaMax = c.SigmaMin, c.SigmaMax
		switch v := pick(c.SolverType, "bh2"); v {
		case "bh1":
			s.solverType = "bh1"
		default: // bh2, and midpoint/heun/logrho which diffusers remaps
			s.solverType = "bh2"
		}
		if s.solverOrder > 2 {
			return s, unsupported("solver_order", s.solverOrder)
		}
		if c.ShiftTerminal != nil {
			return s, unsupported("shift_terminal", *c.ShiftTerminal)
		}
		if err := refuseSigmaKinds(c, true); err != nil {
			return s, err
		}
	}
	return s, nil
}

// refuseSigmaKinds rejects the sigma tables other than the training and
// Karras ones; flow is set for the classes that also offer flow-matching
// sigmas.
func refuseSigmaKinds(c Config, flow bool) error {
	fields := []string{"use_exponential_sigmas", "use_beta_sigmas"}
	values := []*bool{c.UseExpSigmas, c.UseBetaSigmas}
	if flow {
		fields = append(fields, "use_flow_sigmas", "use_dynamic_shifting")
		values = append(values, c.UseFlowSigmas, c.UseDynamicShift)
	}
	for i, v := range values {
		if v != nil && *v {
			return fmt.Errorf("field %q: true is not supported", fields[i])
		}
	}
	return nil
}
