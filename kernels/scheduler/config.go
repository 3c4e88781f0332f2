package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Config is a diffusers scheduler_config.json. Every option is optional: a
// nil pointer (or nil slice) means the key was absent or null, and each
// scheduler then uses its own diffusers default, exactly as
// SchedulerClass.from_config does. This matters because the defaults differ
// between classes (DDIM clips samples and sets alpha to one by default,
// PNDM does neither; DDIM and PNDM space timesteps "leading", the others
// "linspace"), so absence cannot be folded into a single zero value here.
//
// Keys a scheduler class does not take are ignored by that scheduler, as
// diffusers ignores them.
type Config struct {
	// ClassName is "_class_name": the scheduler the checkpoint shipped with.
	// It does not choose the scheduler; New's name does.
	ClassName string

	NumTrainTimesteps *int      // num_train_timesteps
	BetaStart         *float64  // beta_start
	BetaEnd           *float64  // beta_end
	BetaSchedule      *string   // beta_schedule: linear, scaled_linear, squaredcos_cap_v2
	TrainedBetas      []float64 // trained_betas
	PredictionType    *string   // prediction_type: epsilon, v_prediction, sample
	TimestepSpacing   *string   // timestep_spacing: leading, linspace, trailing
	StepsOffset       *int      // steps_offset
	ClipSample        *bool     // clip_sample
	ClipSampleRange   *float64  // clip_sample_range
	SetAlphaToOne     *bool     // set_alpha_to_one
	SkipPRKSteps      *bool     // skip_prk_steps
	Thresholding      *bool     // thresholding
	RescaleZeroSNR    *bool     // rescale_betas_zero_snr
	SolverOrder       *int      // solver_order
	AlgorithmType     *string   // algorithm_type
	SolverType        *string   // solver_type
	LowerOrderFinal   *bool     // lower_order_final
	EulerAtFinal      *bool     // euler_at_final
	FinalSigmasType   *string   // final_sigmas_type: zero, sigma_min
	LambdaMinClipped  *float64  // lambda_min_clipped (may be -Infinity)
	VarianceType      *string   // variance_type
	UseKarrasSigmas   *bool     // use_karras_sigmas
	UseExpSigmas      *bool     // use_exponential_sigmas
	UseBetaSigmas     *bool     // use_beta_sigmas
	UseLuLambdas      *bool     // use_lu_lambdas
	UseFlowSigmas     *bool     // use_flow_sigmas
	UseDynamicShift   *bool     // use_dynamic_shifting
	SigmaMin          *float64  // sigma_min
	SigmaMax          *float64  // sigma_max
	InterpolationType *string   // interpolation_type: linear, log_linear
	TimestepType      *string   // timestep_type: discrete, continuous
	PredictX0         *bool     // predict_x0
	DisableCorrector  []int     // disable_corrector
	ShiftTerminal     *float64  // shift_terminal
}

// knownClasses are the diffusers schedulers a Stable Diffusion checkpoint
// may name; any of them can seed the schedulers here, as from_config allows.
var knownClasses = map[string]bool{
	"DDIMScheduler":                   true,
	"DDPMScheduler":                   true,
	"PNDMScheduler":                   true,
	"LMSDiscreteScheduler":            true,
	"EulerDiscreteScheduler":          true,
	"EulerAncestralDiscreteScheduler": true,
	"HeunDiscreteScheduler":           true,
	"DPMSolverMultistepScheduler":     true,
	"DPMSolverSinglestepScheduler":    true,
	"DPMSolverSDEScheduler":           true,
	"KDPM2DiscreteScheduler":          true,
	"KDPM2AncestralDiscreteScheduler": true,
	"DEISMultistepScheduler":          true,
	"UniPCMultistepScheduler":         true,
	"LCMScheduler":                    true,
	"TCDScheduler":                    true,
}

// enumValues lists the values diffusers accepts for string options; a value
// outside them is a typo or a newer feature, refused at parse time.
var enumValues = map[string][]string{
	"beta_schedule":      {"linear", "scaled_linear", "squaredcos_cap_v2"},
	"prediction_type":    {"epsilon", "v_prediction", "sample"},
	"timestep_spacing":   {"leading", "linspace", "trailing"},
	"algorithm_type":     {"dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver", "deis"},
	"solver_type":        {"midpoint", "heun", "logrho", "bh1", "bh2"},
	"final_sigmas_type":  {"zero", "sigma_min"},
	"interpolation_type": {"linear", "log_linear"},
	"timestep_type":      {"discrete", "continuous"},
	"variance_type":      {"fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"},
}

// configFields maps each JSON key we understand to its decoder. Keys not
// listed (_diffusers_version, dynamic_thresholding_ratio, flow_shift, ...)
// are tolerated and ignored: they never change what our schedulers compute.
var configFields = map[string]func(c *Config, raw json.RawMessage) error{
	"_class_name": func(c *Config, raw json.RawMessage) error {
		var s *string
		if err := setString(&s, raw); err != nil || s == nil {
			return err
		}
		if !knownClasses[*s] {
			return fmt.Errorf("unknown scheduler class %q", *s)
		}
		c.ClassName = *s
		return nil
	},
	"num_train_timesteps":    func(c *Config, r json.RawMessage) error { return setInt(&c.NumTrainTimesteps, r) },
	"beta_start":             func(c *Config, r json.RawMessage) error { return setFloat(&c.BetaStart, r) },
	"beta_end":               func(c *Config, r json.RawMessage) error { return setFloat(&c.BetaEnd, r) },
	"beta_schedule":          func(c *Config, r json.RawMessage) error { return setString(&c.BetaSchedule, r) },
	"trained_betas":          func(c *Config, r json.RawMessage) error { return setFloats(&c.TrainedBetas, r) },
	"prediction_type":        func(c *Config, r json.RawMessage) error { return setString(&c.PredictionType, r) },
	"timestep_spacing":       func(c *Config, r json.RawMessage) error { return setString(&c.TimestepSpacing, r) },
	"steps_offset":           func(c *Config, r json.RawMessage) error { return setInt(&c.StepsOffset, r) },
	"clip_sample":            func(c *Config, r json.RawMessage) error { return setBool(&c.ClipSample, r) },
	"clip_sample_range":      func(c *Config, r json.RawMessage) error { return setFloat(&c.ClipSampleRange, r) },
	"set_alpha_to_one":       func(c *Config, r json.RawMessage) error { return setBool(&c.SetAlphaToOne, r) },
	"skip_prk_steps":         func(c *Config, r json.RawMessage) error { return setBool(&c.SkipPRKSteps, r) },
	"thresholding":           func(c *Config, r json.RawMessage) error { return setBool(&c.Thresholding, r) },
	"rescale_betas_zero_snr": func(c *Config, r json.RawMessage) error { return setBool(&c.RescaleZeroSNR, r) },
	"solver_order":           func(c *Config, r json.RawMessage) error { return setInt(&c.SolverOrder, r) },
	"algorithm_type":         func(c *Config, r json.RawMessage) error { return setString(&c.AlgorithmType, r) },
	"solver_type":            func(c *Config, r json.RawMessage) error { return setString(&c.SolverType, r) },
	"lower_order_final":      func(c *Config, r json.RawMessage) error { return setBool(&c.LowerOrderFinal, r) },
	"euler_at_final":         func(c *Config, r json.RawMessage) error { return setBool(&c.EulerAtFinal, r) },
	"final_sigmas_type":      func(c *Config, r json.RawMessage) error { return setString(&c.FinalSigmasType, r) },
	"lambda_min_clipped":     func(c *Config, r json.RawMessage) error { return setFloat(&c.LambdaMinClipped, r) },
	"variance_type":          func(c *Config, r json.RawMessage) error { return setString(&c.VarianceType, r) },
	"use_karras_sigmas":      func(c *Config, r json.RawMessage) error { return setBool(&c.UseKarrasSigmas, r) },
	"use_exponential_sigmas": func(c *Config, r json.RawMessage) error { return setBool(&c.UseExpSigmas, r) },
	"use_beta_sigmas":        func(c *Config, r json.RawMessage) error { return setBool(&c.UseBetaSigmas, r) },
	"use_lu_lambdas":         func(c *Config, r json.RawMessage) error { return setBool(&c.UseLuLambdas, r) },
	"use_flow_sigmas":        func(c *Config, r json.RawMessage) error { return setBool(&c.UseFlowSigmas, r) },
	"use_dynamic_shifting":   func(c *Config, r json.RawMessage) error { return setBool(&c.UseDynamicShift, r) },
	"sigma_min":              func(c *Config, r json.RawMessage) error { return setFloat(&c.SigmaMin, r) },
	"sigma_max":              func(c *Config, r json.RawMessage) error { return setFloat(&c.SigmaMax, r) },
	"interpolation_type":     func(c *Config, r json.RawMessage) error { return setString(&c.InterpolationType, r) },
	"timestep_type":          func(c *Config, r json.RawMessage) error { return setString(&c.TimestepType, r) },
	"predict_x0":             func(c *Config, r json.RawMessage) error { return setBool(&c.PredictX0, r) },
	"disable_corrector":      func(c *Config, r json.RawMessage) error { return setInts(&c.DisableCorrector, r) },
	"shift_terminal":         func(c *Config, r json.RawMessage) error { return setFloat(&c.ShiftTerminal, r) },
	// solver_p holds a Python scheduler object; JSON cannot carry one
	// meaningfully, so only null is accepted.
	"solver_p": func(c *Config, r json.RawMessage) error {
		if !isNull(r) {
			return fmt.Errorf("a solver_p scheduler is not supported")
		}
		return nil
	},
}

// ParseConfig decodes a diffusers scheduler_config.json. It accepts the
// NaN/Infinity/-Infinity literals Python's json module writes (diffusers
// saves lambda_min_clipped as -Infinity) and ignores keys it does not know.
// A known key with the wrong JSON type, a string option outside the values
// diffusers accepts, a numeric option out of range or an unknown
// _class_name is an error naming the key.
func ParseConfig(data []byte) (Config, error) {
	clean, err := quoteNonFinite(data)
	if err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(clean, &fields); err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	if fields == nil {
		return Config{}, fmt.Errorf("scheduler config: not a JSON object")
	}
	var c Config
	for key, raw := range fields {
		set, ok := configFields[key]
		if !ok {
			continue
		}
		if err := set(&c, raw); err != nil {
			return Config{}, fmt.Errorf("scheduler config: field %q: %w", key, err)
		}
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	return c, nil
}

// validate checks values whose domain does not depend on the scheduler.
func (c Config) validate() error {
	strs := map[string]*string{
		"beta_schedule":      c.BetaSchedule,
		"prediction_type":    c.PredictionType,
		"timestep_spacing":   c.TimestepSpacing,
		"algorithm_type":     c.AlgorithmType,
		"solver_type":        c.SolverType,
		"final_sigmas_type":  c.FinalSigmasType,
		"interpolation_type": c.InterpolationType,
		"timestep_type":      c.TimestepType,
		"variance_type":      c.VarianceType,
	}
	for key, v := range strs {
		if v == nil {
			continue
		}
		if !contains(enumValues[key], *v) {
			return fmt.Errorf("field %q: unsupported value %q (want one of %q)", key, *v, enumValues[key])
		}
	}
	if c.NumTrainTimesteps != nil && (*c.NumTrainTimesteps < 2 || *c.NumTrainTimesteps > maxTrainTimesteps) {
		return fmt.Errorf("field %q: %d out of range [2, %d]", "num_train_timesteps", *c.NumTrainTimesteps, maxTrainTimesteps)
	}
	if c.StepsOffset != nil && (*c.StepsOffset < 0 || *c.StepsOffset > maxTrainTimesteps) {
		return fmt.Errorf("field %q: %d out of range [0, %d]", "steps_offset", *c.StepsOffset, maxTrainTimesteps)
	}
	if c.SolverOrder != nil && (*c.SolverOrder < 1 || *c.SolverOrder > 3) {
		return fmt.Errorf("field %q: %d out of range [1, 3]", "solver_order", *c.SolverOrder)
	}
	finite := map[string]*float64{
		"beta_start":        c.BetaStart,
		"beta_end":          c.BetaEnd,
		"clip_sample_range": c.ClipSampleRange,
		"sigma_min":         c.SigmaMin,
		"sigma_max":         c.SigmaMax,
		"shift_terminal":    c.ShiftTerminal,
	}
	for key, v := range finite {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			return fmt.Errorf("field %q: %v is not finite", key, *v)
		}
	}
	for key, v := range map[string]*float64{"beta_start": c.BetaStart, "beta_end": c.BetaEnd} {
		if v != nil && (*v < 0 || *v >= 1) {
			return fmt.Errorf("field %q: %v out of range [0, 1)", key, *v)
		}
	}
	if c.LambdaMinClipped != nil && math.IsNaN(*c.LambdaMinClipped) {
		return fmt.Errorf("field %q: NaN", "lambda_min_clipped")
	}
	for i, b := range c.TrainedBetas {
		if math.IsNaN(b) || b < 0 || b >= 1 {
			return fmt.Errorf("field %q: element %d = %v out of range [0, 1)", "trained_betas", i, b)
		}
	}
	if c.TrainedBetas != nil && (len(c.TrainedBetas) < 2 || len(c.TrainedBetas) > maxTrainTimesteps) {
		return fmt.Errorf("field %q: %d betas, want 2 to %d", "trained_betas", len(c.TrainedBetas), maxTrainTimesteps)
	}
	return nil
}

// maxTrainTimesteps bounds the tables a config can make us allocate.
const maxTrainTimesteps = 100000

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func setInt(dst **int, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("want an integer: %w", err)
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return fmt.Errorf("integer %d out of range", v)
	}
	n := int(v)
	*dst = &n
	return nil
}

func setBool(dst **bool, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	var v bool
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("want true or false: %w", err)
	}
	*dst = &v
	return nil
}

func setString(dst **string, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("want a string: %w", err)
	}
	*dst = &v
	return nil
}

func setFloat(dst **float64, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	v, err := decodeFloat(raw)
	if err != nil {
		return err
	}
	*dst = &v
	return nil
}

func setFloats(dst *[]float64, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf("want a list of numbers: %w", err)
	}
	out := make([]float64, len(items))
	for i, item := range items {
		v, err := decodeFloat(item)
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		out[i] = v
	}
	*dst = out
	return nil
}

func setInts(dst *[]int, raw json.RawMessage) error {
	if isNull(raw) {
		*dst = nil
		return nil
	}
	var items []int64
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf("want a list of integers: %w", err)
	}
	out := make([]int, len(items))
	for i, v := range items {
		if v < math.MinInt32 || v > math.MaxInt32 {
			return fmt.Errorf("element %d: integer %d out of range", i, v)
		}
		out[i] = int(v)
	}
	*dst = out
	return nil
}

// nonFinite maps the literals Python's json module writes for IEEE
// specials to their values; quoteNonFinite turns them into these strings.
var nonFinite = map[string]float64{
	"NaN":       math.NaN(),
	"Infinity":  math.Inf(1),
	"-Infinity": math.Inf(-1),
}

func decodeFloat(raw json.RawMessage) (float64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("want a number: %w", err)
		}
		if v, ok := nonFinite[s]; ok {
			return v, nil
		}
		return 0, fmt.Errorf("want a number, got string %q", s)
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("want a number: %w", err)
	}
	return v, nil
}

// quoteNonFinite rewrites the bare NaN, Infinity and -Infinity tokens that
// Python's json.dumps emits (outside strings) into JSON strings so that
// encoding/json can read the document. Everything else is copied as is and
// left for encoding/json to judge.
func quoteNonFinite(data []byte) ([]byte, error) {
	var out []byte // allocated only when a token needs rewriting
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if c == '"' {
			inString = true
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		token := ""
		for _, lit := range [...]string{"NaN", "Infinity", "-Infinity"} {
			if bytes.HasPrefix(data[i:], []byte(lit)) {
				token = lit
				break
			}
		}
		if token == "" {
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(data)+16), data[:i]...)
		}
		out = append(out, '"')
		out = append(out, token...)
		out = append(out, '"')
		i += len(token) - 1
	}
	if inString {
		return nil, fmt.Errorf("unterminated string")
	}
	if out == nil {
		return data, nil
	}
	return out, nil
}
