package scheduler

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
)

// sd21Config is stabilityai/stable-diffusion-2-1's scheduler_config.json
// (v_prediction), as published.
const sd21Config = `{
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.8.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
}`

// dpmSaved is a DPMSolverMultistepScheduler config as diffusers'
// save_config writes it, with Python's -Infinity literal.
const dpmSaved = `{
  "_class_name": "DPMSolverMultistepScheduler",
  "_diffusers_version": "0.27.0",
  "algorithm_type": "dpmsolver++",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "dynamic_thresholding_ratio": 0.995,
  "euler_at_final": false,
  "final_sigmas_type": "zero",
  "lambda_min_clipped": -Infinity,
  "lower_order_final": true,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "solver_order": 2,
  "solver_type": "midpoint",
  "steps_offset": 1,
  "thresholding": false,
  "timestep_spacing": "linspace",
  "trained_betas": null,
  "use_karras_sigmas": true,
  "use_lu_lambdas": false,
  "variance_type": null
}`

func TestParseGoldenConfig(t *testing.T) {
	data, err := os.ReadFile(golden.Path(t, "tiny-sd15", "scheduler", "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClassName != "PNDMScheduler" || *c.NumTrainTimesteps != 1000 || *c.BetaStart != 0.00085 ||
		*c.BetaEnd != 0.012 || *c.BetaSchedule != "scaled_linear" || *c.StepsOffset != 1 ||
		*c.SetAlphaToOne || !*c.SkipPRKSteps || *c.ClipSample || c.TrainedBetas != nil {
		t.Errorf("parsed %+v", c)
	}
	// Absent keys stay absent so each scheduler applies its own default.
	if c.TimestepSpacing != nil || c.PredictionType != nil {
		t.Errorf("absent keys were filled in: spacing %v prediction %v", c.TimestepSpacing, c.PredictionType)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr string // substring; "" means success
		check   func(t *testing.T, c Config)
	}{
		{name: "sd21", json: sd21Config, check: func(t *testing.T, c Config) {
			if *c.PredictionType != "v_prediction" || c.ClassName != "DDIMScheduler" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "python infinity", json: dpmSaved, check: func(t *testing.T, c Config) {
			if !math.IsInf(*c.LambdaMinClipped, -1) || !*c.UseKarrasSigmas || *c.SolverOrder != 2 {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "infinity inside a string is text", json: `{"_diffusers_version": "-Infinity NaN"}`},
		{name: "empty object", json: `{}`},
		{name: "unknown keys tolerated", json: `{"foo": [1, {"x": NaN}], "flow_shift": 3.0}`},
		{name: "null means absent", json: `{"timestep_spacing": null, "sigma_min": null}`, check: func(t *testing.T, c Config) {
			if c.TimestepSpacing != nil || c.SigmaMin != nil {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "trained betas", json: `{"trained_betas": [0.1, 0.2, 0.3]}`, check: func(t *testing.T, c Config) {
			if len(c.TrainedBetas) != 3 || c.TrainedBetas[2] != 0.3 {
				t.Errorf("got %v", c.TrainedBetas)
			}
		}},
		{name: "disable corrector", json: `{"disable_corrector": [0, 3]}`, check: func(t *testing.T, c Config) {
			if len(c.DisableCorrector) != 2 || c.DisableCorrector[1] != 3 {
				t.Errorf("got %v", c.DisableCorrector)
			}
		}},
		{name: "not json", json: `{"beta_start": }`, wantErr: "scheduler config"},
		{name: "not an object", json: `[1, 2]`, wantErr: "scheduler config"},
		{name: "null document", json: `null`, wantErr: "not a JSON object"},
		{name: "unknown class", json: `{"_class_name": "FancyScheduler"}`, wantErr: `"_class_name"`},
		{name: "bad spacing", json: `{"timestep_spacing": "uniform"}`, wantErr: `"timestep_spacing"`},
		{name: "bad schedule", json: `{"beta_schedule": "sigmoid"}`, wantErr: `"beta_schedule"`},
		{name: "bad prediction", json: `{"prediction_type": "flow_prediction"}`, wantErr: `"prediction_type"`},
		{name: "int as string", json: `{"num_train_timesteps": "1000"}`, wantErr: `"num_train_timesteps"`},
		{name: "fractional int", json: `{"steps_offset": 1.5}`, wantErr: `"steps_offset"`},
		{name: "bool as int", json: `{"clip_sample": 0}`, wantErr: `"clip_sample"`},
		{name: "negative offset", json: `{"steps_offset": -1}`, wantErr: `"steps_offset"`},
		{name: "tiny train steps", json: `{"num_train_timesteps": 1}`, wantErr: `"num_train_timesteps"`},
		{name: "infinite beta", json: `{"beta_end": Infinity}`, wantErr: `"beta_end"`},
		{name: "beta of one", json: `{"beta_start": 1}`, wantErr: `"beta_start"`},
		{name: "string float", json: `{"beta_start": "0.1"}`, wantErr: `"beta_start"`},
		{name: "solver order", json: `{"solver_order": 4}`, wantErr: `"solver_order"`},
		{name: "bad trained beta", json: `{"trained_betas": [0.1, NaN]}`, wantErr: `"trained_betas"`},
		{name: "solver_p object", json: `{"solver_p": {"x": 1}}`, wantErr: `"solver_p"`},
		{name: "unterminated string", json: `{"a": "b`, wantErr: "scheduler config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// TestUnsupportedOptions checks that options we do not implement are
// refused by the schedulers that read them, naming the field, and ignored
// by those that do not (as diffusers' from_config ignores them).
func TestUnsupportedOptions(t *testing.T) {
	tests := []struct {
		json    string
		name    string
		wantErr string
	}{
		{`{"thresholding": true}`, DDIM, `"thresholding"`},
		{`{"thresholding": true}`, Euler, ""},
		{`{"rescale_betas_zero_snr": true}`, UniPC, `"rescale_betas_zero_snr"`},
		{`{"rescale_betas_zero_snr": true}`, PNDM, `"skip_prk_steps"`},
		{`{"skip_prk_steps": true, "rescale_betas_zero_snr": true}`, PNDM, ""},
		{`{}`, PNDM, `"skip_prk_steps"`},
		{`{"algorithm_type": "sde-dpmsolver++"}`, DPMPP2M, `"algorithm_type"`},
		{`{"algorithm_type": "sde-dpmsolver++"}`, UniPC, ""},
		{`{"solver_order": 3}`, DPMPP2M, `"solver_order"`},
		{`{"solver_order": 3}`, UniPC, `"solver_order"`},
		{`{"use_lu_lambdas": true}`, DPMPP2MKarras, `"use_lu_lambdas"`},
		{`{"use_exponential_sigmas": true}`, Euler, `"use_exponential_sigmas"`},
		{`{"use_flow_sigmas": true}`, UniPC, `"use_flow_sigmas"`},
		{`{"variance_type": "learned_range"}`, DPMPP2M, `"variance_type"`},
		{`{"interpolation_type": "log_linear"}`, Euler, `"interpolation_type"`},
		{`{"prediction_type": "sample"}`, EulerA, `"prediction_type"`},
		{`{"prediction_type": "sample"}`, DDIM, ""},
		{`{"lower_order_final": false}`, UniPC, `"lower_order_final"`},
		{`{"shift_terminal": 0.1}`, UniPC, `"shift_terminal"`},
		{`{"steps_offset": 999}`, DDIM, "timestep"},
		{`{"timestep_type": "continuous", "prediction_type": "v_prediction"}`, Euler, `"timestep_type"`},
	}
	for _, tt := range tests {
		t.Run(tt.name+" "+tt.json, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(c, tt.name, 10)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
			}
		})
	}
}

// FuzzParseConfig checks that the parser never panics and that whatever
// it accepts either builds a scheduler that runs a whole (tiny) generation
// or is refused with an error.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sd21Config))
	f.Add([]byte(dpmSaved))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		sample := []float32{0.5, -1, 2, 0}
		out := []float32{0.1, 0.2, -0.3, 0.4}
		noise := func(dst []float32) {
			for i := range dst {
				dst[i] = 0.25
			}
		}
		for _, name := range Names() {
			s, err := New(c, name, 3)
			if err != nil {
				continue
			}
			x := sample
			for i := range s.Timesteps() {
				if _, err := s.ScaleModelInput(x, i); err != nil {
					t.Fatalf("%s step %d: %v", name, i, err)
				}
				if x, err = s.Step(out, x, i, noise); err != nil {
					t.Fatalf("%s step %d: %v", name, i, err)
				}
			}
		}
	})
}
