package scheduler

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// relTol is the parity bound: max|ours-ref| <= relTol * max(1, max|ref|).
const relTol = 1e-5

// relErr is max|got-want| / max(1, max|want|).
func relErr(got, want []float32) float64 {
	var maxDiff, maxRef float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-float64(want[i])))
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
	}
	return maxDiff / math.Max(1, maxRef)
}

func goldenConfig(t *testing.T) Config {
	t.Helper()
	data, err := os.ReadFile(golden.Path(t, "tiny-sd15", "scheduler", "scheduler_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// refFile reads named float32 tensors from one golden file.
type refFile struct {
	t *testing.T
	f *safetensors.File
}

func openRef(t *testing.T, name string) refFile {
	t.Helper()
	f, err := safetensors.Open(golden.Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return refFile{t, f}
}

func (r refFile) floats(name string) ([]float32, []int) {
	r.t.Helper()
	v, shape, err := r.f.Float32s(name)
	if err != nil {
		r.t.Fatal(err)
	}
	return v, shape
}

func (r refFile) has(name string) bool {
	_, ok := r.f.Info(name)
	return ok
}

// timesteps reads a timestep tensor, int64 or float32.
func (r refFile) timesteps(name string) []float64 {
	r.t.Helper()
	info, ok := r.f.Info(name)
	if !ok {
		r.t.Fatalf("no tensor %q", name)
	}
	if info.DType == safetensors.I64 {
		v, _, err := r.f.Int64s(name)
		if err != nil {
			r.t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	v, _ := r.floats(name)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestGoldenSchedulers replays the reference loop of
// golden/README.md ("schedulers_ref") for every scheduler and step count:
// x = x_init * init_noise_sigma; per step xin = scale_model_input(x),
// mo = 0.1*xin + eps_fixed, x = step(mo, x). Our x is carried from step to
// step; the reference model outputs are fed to Step so that a failure
// points at the step, not at the synthetic model.
func TestGoldenSchedulers(t *testing.T) {
	cfg := goldenConfig(t)
	ref := openRef(t, "schedulers_ref.safetensors")
	xInit, _ := ref.floats("x_init")
	epsFixed, _ := ref.floats("eps_fixed")

	cases := []struct{ key, name string }{
		{"ddim", DDIM},
		{"pndm", PNDM},
		{"euler", Euler},
		{"dpmpp2m", DPMPP2M},
		{"unipc", UniPC},
	}
	for _, c := range cases {
		for _, steps := range []int{20, 4} {
			k := fmt.Sprintf("%s_%d", c.key, steps)
			t.Run(k, func(t *testing.T) {
				s, err := New(cfg, c.name, steps)
				if err != nil {
					t.Fatal(err)
				}
				wantTS := ref.timesteps(k + "_timesteps")
				gotTS := s.Timesteps()
				if fmt.Sprint(gotTS) != fmt.Sprint(wantTS) {
					t.Fatalf("timesteps = %v, want %v", gotTS, wantTS)
				}
				if got, want := s.FloatTimesteps(), c.name == Euler; got != want {
					t.Errorf("FloatTimesteps = %v, want %v", got, want)
				}
				if ref.has(k + "_sigmas") {
					want, _ := ref.floats(k + "_sigmas")
					got := s.Sigmas()
					if len(got) != len(want) {
						t.Fatalf("%d sigmas, want %d", len(got), len(want))
					}
					if e := relErr(got, want); e > relTol {
						t.Errorf("sigmas rel err %.3g (got %v, want %v)", e, got, want)
					} else {
						t.Logf("sigmas rel err %.3g", e)
					}
				} else if s.Sigmas() != nil {
					t.Errorf("Sigmas = %v, want none", s.Sigmas())
				}
				wantInit, _ := ref.floats(k + "_init_noise_sigma")
				if e := relErr([]float32{s.InitNoiseSigma()}, wantInit); e > relTol {
					t.Errorf("init_noise_sigma = %v, want %v", s.InitNoiseSigma(), wantInit[0])
				}

				x := make([]float32, len(xInit))
				for i, v := range xInit {
					x[i] = v * s.InitNoiseSigma()
				}
				wantStart, _ := ref.floats(k + "_x_start")
				if e := relErr(x, wantStart); e > relTol {
					t.Fatalf("x_start rel err %.3g", e)
				}
				scaled, _ := ref.floats(k + "_scaled_inputs")
				outputs, _ := ref.floats(k + "_model_outputs")
				samples, _ := ref.floats(k + "_samples")
				n := len(x)
				if len(samples) != len(wantTS)*n {
					t.Fatalf("reference has %d sample values, want %d steps of %d", len(samples), len(wantTS), n)
				}
				var worstIn, worstOut float64
				for i := range wantTS {
					xin, err := s.ScaleModelInput(x, i)
					if err != nil {
						t.Fatal(err)
					}
					if e := relErr(xin, scaled[i*n:(i+1)*n]); e > relTol {
						t.Errorf("step %d: scaled input rel err %.3g", i, e)
					} else {
						worstIn = math.Max(worstIn, e)
					}
					mo := outputs[i*n : (i+1)*n]
					synth := make([]float32, n)
					for j := range synth {
						synth[j] = float32(0.1*xin[j]) + epsFixed[j]
					}
					if e := relErr(synth, mo); e > relTol {
						t.Errorf("step %d: model output 0.1*xin+eps rel err %.3g", i, e)
					}
					x, err = s.Step(mo, x, i, nil)
					if err != nil {
						t.Fatal(err)
					}
					if e := relErr(x, samples[i*n:(i+1)*n]); e > relTol {
						t.Errorf("step %d (t=%v): sample rel err %.3g", i, gotTS[i], e)
					} else {
						worstOut = math.Max(worstOut, e)
					}
				}
				t.Logf("max rel err: scaled inputs %.3g, samples %.3g", worstIn, worstOut)
			})
		}
	}
}

// TestGoldenE2ETimesteps checks the timesteps the reference pipeline runs
// with, which the UNet receives (Euler's as floats).
func TestGoldenE2ETimesteps(t *testing.T) {
	cfg := goldenConfig(t)
	ref := openRef(t, "e2e_ref.safetensors")
	for _, c := range []struct{ key, name string }{{"ddim", DDIM}, {"euler", Euler}} {
		s, err := New(cfg, c.name, 4)
		if err != nil {
			t.Fatal(err)
		}
		want := ref.timesteps(c.key + "_timesteps")
		if got := s.Timesteps(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s timesteps = %v, want %v", c.name, got, want)
		}
	}
}
