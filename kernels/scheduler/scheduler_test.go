package scheduler

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func mustConfig(t *testing.T, js string) Config {
	t.Helper()
	c, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sd15 is the SD1.5 scheduler config (the golden tiny-sd15 one) as JSON,
// with extra keys appended by the tests.
func sd15(extra string) string {
	js := `{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
"beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
"set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null`
	if extra != "" {
		js += ", " + extra
	}
	return js + "}"
}

// TestTimestepSpacing checks the spacings against Table 2 of Lin et al.,
// "Common Diffusion Noise Schedules and Sample Steps are Flawed" (T=1000,
// 10 steps), which diffusers' timestep_spacing names, and against the
// schedules golden/README.md lists for 4 steps.
func TestTimestepSpacing(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		steps int
		want  []float64
	}{
		{DDIM, `"timestep_spacing": "linspace"`, 10, []float64{999, 888, 777, 666, 555, 444, 333, 222, 111, 0}},
		{DDIM, `"timestep_spacing": "leading", "steps_offset": 0`, 10, []float64{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}},
		{DDIM, `"timestep_spacing": "trailing"`, 10, []float64{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
		{DDIM, ``, 4, []float64{751, 501, 251, 1}},
		{Euler, ``, 4, []float64{999, 666, 333, 0}},
		{Euler, `"timestep_spacing": "trailing"`, 10, []float64{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
		{EulerA, ``, 4, []float64{999, 666, 333, 0}},
		{DPMPP2M, ``, 4, []float64{999, 749, 500, 250}},
		{UniPC, ``, 4, []float64{999, 749, 500, 250}},
		// The multistep solvers space num+1 points and drop the last:
		// (arange(5) * (1000 // 5))[::-1][:-1] + 1 and arange(1000, 0, -250) - 1.
		{DPMPP2M, `"timestep_spacing": "leading"`, 4, []float64{801, 601, 401, 201}},
		{UniPC, `"timestep_spacing": "trailing"`, 4, []float64{999, 749, 499, 249}},
		// PNDM repeats its second timestep.
		{PNDM, `"timestep_spacing": "trailing"`, 4, []float64{999, 749, 749, 499, 249}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %d", tt.name, tt.extra, tt.steps), func(t *testing.T) {
			s, err := New(mustConfig(t, sd15(tt.extra)), tt.name, tt.steps)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Timesteps(); !slices.Equal(got, tt.want) {
				t.Errorf("timesteps = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEulerLeadingInitSigma: with leading spacing the Euler family starts
// from noise of variance sigma_max^2 + 1 (diffusers' init_noise_sigma).
func TestEulerLeadingInitSigma(t *testing.T) {
	s, err := New(mustConfig(t, sd15(`"timestep_spacing": "leading"`)), Euler, 4)
	if err != nil {
		t.Fatal(err)
	}
	sig := s.Sigmas()
	want := math.Sqrt(float64(sig[0])*float64(sig[0]) + 1)
	if got := float64(s.InitNoiseSigma()); math.Abs(got-want) > 1e-6*want {
		t.Errorf("init_noise_sigma = %v, want %v", got, want)
	}
}

// trainSigmas64 is the SD1.5 training noise schedule computed in float64
// from its definition, independently of the float32 emulation.
func trainSigmas64() []float64 {
	const n = 1000
	lo, hi := math.Sqrt(0.00085), math.Sqrt(0.012)
	out := make([]float64, n)
	prod := 1.0
	for i := range out {
		b := lo + (hi-lo)*float64(i)/(n-1)
		prod *= 1 - b*b
		out[i] = math.Sqrt((1 - prod) / prod)
	}
	return out
}

// TestKarrasSigmas checks DPM-Solver++ 2M Karras (no standalone diffusers
// reference exists for it): sigmas follow Karras et al.'s rho=7 schedule
// between the training sigma_max and sigma_min (taken from the golden Euler
// table, which diffusers built at t=999 and t=0), end with 0, and the
// timesteps are those sigmas mapped back through the training log-sigmas
// and rounded, as diffusers' _sigma_to_t does.
func TestKarrasSigmas(t *testing.T) {
	cfg := goldenConfig(t)
	ref := openRef(t, "schedulers_ref.safetensors")
	euler20, _ := ref.floats("euler_20_sigmas")
	sigmaMax, sigmaMin := float64(euler20[0]), float64(euler20[19])
	train := trainSigmas64()
	for _, steps := range []int{4, 20, 30} {
		t.Run(fmt.Sprint(steps), func(t *testing.T) {
			s, err := New(cfg, DPMPP2MKarras, steps)
			if err != nil {
				t.Fatal(err)
			}
			sig, ts := s.Sigmas(), s.Timesteps()
			if len(sig) != steps+1 || len(ts) != steps || sig[steps] != 0 {
				t.Fatalf("%d sigmas (last %v), %d timesteps", len(sig), sig[len(sig)-1], len(ts))
			}
			if float64(sig[0]) != sigmaMax || float64(sig[steps-1]) != sigmaMin {
				t.Errorf("ends %v..%v, want %v..%v", sig[0], sig[steps-1], sigmaMax, sigmaMin)
			}
			maxInv, minInv := math.Pow(sigmaMax, 1/7.0), math.Pow(sigmaMin, 1/7.0)
			for i := 0; i < steps; i++ {
				want := math.Pow(maxInv+float64(i)/float64(steps-1)*(minInv-maxInv), 7)
				if math.Abs(float64(sig[i])-want) > 1e-6*want {
					t.Errorf("sigma[%d] = %v, want %v", i, sig[i], want)
				}
				// Invert log-sigma by linear interpolation between the two
				// training steps that bracket it.
				ls := math.Log(want)
				j := 0
				for j < len(train)-2 && math.Log(train[j+1]) <= ls {
					j++
				}
				lo, hi := math.Log(train[j]), math.Log(train[j+1])
				w := math.Min(math.Max((lo-ls)/(lo-hi), 0), 1)
				tf := float64(j) + w
				if frac := tf - math.Floor(tf); math.Abs(frac-0.5) < 1e-3 {
					t.Logf("timestep[%d]: %v is too close to a rounding tie to check", i, tf)
					continue
				}
				if ts[i] != math.RoundToEven(tf) {
					t.Errorf("timestep[%d] = %v, want round(%v)", i, ts[i], tf)
				}
			}
			if ts[0] != 999 || ts[steps-1] != 0 {
				t.Errorf("timesteps %v do not span 999..0", ts)
			}
		})
	}
}

// synthModel is the golden README's stand-in model, 0.1*xin + eps.
func synthModel(xin, eps []float32) []float32 {
	out := make([]float32, len(xin))
	for i := range out {
		out[i] = float32(0.1*xin[i]) + eps[i]
	}
	return out
}

// testNoise returns a deterministic noise source that counts its calls.
func testNoise(calls *int) Noise {
	return func(dst []float32) {
		*calls++
		for i := range dst {
			dst[i] = float32(math.Sin(float64(*calls*131 + i)))
		}
	}
}

// fixedNoise is a noise source that always draws the same values.
func fixedNoise(dst []float32) {
	for i := range dst {
		dst[i] = float32(math.Sin(float64(3*i + 1)))
	}
}

func testLatents(n int, phase float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(math.Cos(float64(i)*0.7 + phase))
	}
	return out
}

// run performs a whole generation with the synthetic model.
func run(t *testing.T, s Scheduler, x, eps []float32, noise Noise) []float32 {
	t.Helper()
	x = slices.Clone(x)
	for i := range x {
		x[i] *= s.InitNoiseSigma()
	}
	for i := range s.Timesteps() {
		xin, err := s.ScaleModelInput(x, i)
		if err != nil {
			t.Fatal(err)
		}
		if x, err = s.Step(synthModel(xin, eps), x, i, noise); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// TestFreshState runs every scheduler twice from fresh values, one after the
// other and interleaved, and expects bit-identical results: no state leaks
// between generations.
func TestFreshState(t *testing.T) {
	cfg := mustConfig(t, sd15(""))
	x := testLatents(64, 0)
	eps := testLatents(64, 1)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			var c1, c2 int
			a, err := New(cfg, name, 7)
			if err != nil {
				t.Fatal(err)
			}
			first := run(t, a, x, eps, testNoise(&c1))
			b, err := New(cfg, name, 7)
			if err != nil {
				t.Fatal(err)
			}
			second := run(t, b, x, eps, testNoise(&c2))
			if !slices.Equal(first, second) {
				t.Fatal("second generation differs from the first")
			}
			// Interleave two generations step by step.
			var n1, n2 int
			p, _ := New(cfg, name, 7)
			q, _ := New(cfg, name, 7)
			xp := scaled(x, p.InitNoiseSigma())
			xq := scaled(testLatents(64, 2), q.InitNoiseSigma())
			for i := range p.Timesteps() {
				inP, _ := p.ScaleModelInput(xp, i)
				inQ, _ := q.ScaleModelInput(xq, i)
				if xp, err = p.Step(synthModel(inP, eps), xp, i, testNoise(&n1)); err != nil {
					t.Fatal(err)
				}
				if xq, err = q.Step(synthModel(inQ, eps), xq, i, testNoise(&n2)); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(xp, first) {
				t.Error("interleaving with another generation changed the result")
			}
			if p.NeedsNoise() != (c1 > 0) {
				t.Errorf("NeedsNoise = %v but noise was drawn %d times", p.NeedsNoise(), c1)
			}
		})
	}
}

func scaled(x []float32, s float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v * s
	}
	return out
}

func TestStepErrors(t *testing.T) {
	cfg := mustConfig(t, sd15(""))
	x := testLatents(8, 0)
	for _, name := range Names() {
		s, err := New(cfg, name, 4)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Step(x, x[:4], 0, nil); err == nil {
			t.Errorf("%s: length mismatch accepted", name)
		}
		if _, err := s.Step(x, x, len(s.Timesteps()), nil); err == nil {
			t.Errorf("%s: step past the end accepted", name)
		}
		if _, err := s.ScaleModelInput(x, -1); err == nil {
			t.Errorf("%s: negative step accepted", name)
		}
		_, err = s.Step(x, x, 1, nil)
		multistep := name == PNDM || name == DPMPP2M || name == DPMPP2MKarras || name == UniPC
		if multistep && (err == nil || !strings.Contains(err.Error(), "out of order")) {
			t.Errorf("%s: skipping step 0 gave %v", name, err)
		}
		if name == EulerA && (err == nil || !strings.Contains(err.Error(), "noise")) {
			t.Errorf("%s: step without noise gave %v", name, err)
		}
	}
	if _, err := New(cfg, "lms", 4); err == nil {
		t.Error("unknown scheduler accepted")
	}
	for _, n := range []int{0, -1, 1001} {
		if _, err := New(cfg, DDIM, n); err == nil {
			t.Errorf("%d steps accepted", n)
		}
	}
	if _, err := NewWithOptions(cfg, DDIM, 4, Options{Eta: -1}); err == nil {
		t.Error("negative eta accepted")
	}
	s, _ := NewWithOptions(cfg, DDIM, 4, Options{Eta: 0.5})
	if _, err := s.Step(x, x, 0, nil); err == nil || !strings.Contains(err.Error(), "noise") {
		t.Errorf("DDIM eta>0 without noise gave %v", err)
	}
}

// TestDDIMEta checks DDIM with eta > 0 against equations 12 and 16 of Song
// et al. evaluated in float64 on the training schedule.
func TestDDIMEta(t *testing.T) {
	cfg := mustConfig(t, sd15(""))
	const eta = 0.7
	s, err := NewWithOptions(cfg, DDIM, 5, Options{Eta: eta})
	if err != nil {
		t.Fatal(err)
	}
	if !s.NeedsNoise() {
		t.Fatal("NeedsNoise is false with eta > 0")
	}
	train := trainSigmas64()
	acp := func(t int) float64 {
		if t < 0 {
			return 1 / (1 + train[0]*train[0]) // set_alpha_to_one false
		}
		return 1 / (1 + train[t]*train[t])
	}
	x := testLatents(32, 0)
	eps := testLatents(32, 3)
	for i, ts := range s.Timesteps() {
		var calls int
		var drawn []float32
		noise := func(dst []float32) {
			calls++
			fixedNoise(dst)
			drawn = slices.Clone(dst)
		}
		got, err := s.Step(eps, x, i, noise)
		if err != nil {
			t.Fatal(err)
		}
		if calls != 1 || len(drawn) != len(x) {
			t.Fatalf("step %d: noise drawn %d times, %d values", i, calls, len(drawn))
		}
		at, ap := acp(int(ts)), acp(int(ts)-200)
		std := eta * math.Sqrt((1-ap)/(1-at)*(1-at/ap))
		want := make([]float32, len(x))
		for j := range x {
			x0 := (float64(x[j]) - math.Sqrt(1-at)*float64(eps[j])) / math.Sqrt(at)
			want[j] = float32(math.Sqrt(ap)*x0 + math.Sqrt(1-ap-std*std)*float64(eps[j]) + std*float64(drawn[j]))
		}
		if e := relErr(got, want); e > 1e-5 {
			t.Errorf("step %d: rel err %.3g", i, e)
		}
		x = got
	}
}

// TestEulerAncestral checks one ancestral step against k-diffusion's
// sample_euler_ancestral in float64.
func TestEulerAncestral(t *testing.T) {
	s, err := New(mustConfig(t, sd15("")), EulerA, 6)
	if err != nil {
		t.Fatal(err)
	}
	sig := s.Sigmas()
	x := scaled(testLatents(32, 0), s.InitNoiseSigma())
	eps := testLatents(32, 3)
	for i := range s.Timesteps() {
		var drawn []float32
		got, err := s.Step(eps, x, i, func(dst []float32) {
			for j := range dst {
				dst[j] = float32(math.Cos(float64(7*i + j)))
			}
			drawn = slices.Clone(dst)
		})
		if err != nil {
			t.Fatal(err)
		}
		from, to := float64(sig[i]), float64(sig[i+1])
		up := math.Min(to, math.Sqrt(to*to*(from*from-to*to)/(from*from)))
		down := math.Sqrt(to*to - up*up)
		want := make([]float32, len(x))
		for j := range x {
			x0 := float64(x[j]) - from*float64(eps[j])
			d := (float64(x[j]) - x0) / from
			want[j] = float32(float64(x[j]) + d*(down-from) + float64(drawn[j])*up)
		}
		if e := relErr(got, want); e > 1e-5 {
			t.Errorf("step %d: rel err %.3g", i, e)
		}
		x = got
	}
}

// vpCoefficients returns (alpha_t, sigma_t) of the variance-preserving
// process at step i, for the synthetic model's conversions.
func vpCoefficients(s Scheduler, i int) (float64, float64) {
	if sig := s.Sigmas(); sig != nil {
		a := 1 / math.Sqrt(1+float64(sig[i])*float64(sig[i]))
		return a, float64(sig[i]) * a
	}
	train := trainSigmas64()
	t := int(s.Timesteps()[i])
	a := 1 / math.Sqrt(1+train[t]*train[t])
	return a, math.Sqrt(1 - a*a)
}

// TestPredictionTypes runs each scheduler with an epsilon model and with
// the v_prediction and sample models that predict the same thing (v =
// alpha*eps - sigma*x0, Salimans & Ho 2022), and expects the same
// trajectory. SD2 checkpoints use v_prediction.
func TestPredictionTypes(t *testing.T) {
	x := testLatents(48, 0)
	eps := testLatents(48, 5)
	for _, name := range Names() {
		for _, pred := range []string{"v_prediction", "sample"} {
			t.Run(name+" "+pred, func(t *testing.T) {
				base, err := New(mustConfig(t, sd15("")), name, 6)
				if err != nil {
					t.Fatal(err)
				}
				other, err := New(mustConfig(t, sd15(`"prediction_type": "`+pred+`"`)), name, 6)
				if pred == "sample" && (name == PNDM || name == EulerA) {
					// diffusers does not implement it either.
					if err == nil || !strings.Contains(err.Error(), `"prediction_type"`) {
						t.Fatalf("err = %v, want a prediction_type refusal", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				steps := len(base.Timesteps())
				if name == PNDM {
					// PLMS mixes outputs of several steps before converting
					// them, so only its first step is prediction-invariant.
					steps = 1
				}
				var c1, c2 int
				xa, xb := scaled(x, base.InitNoiseSigma()), scaled(x, other.InitNoiseSigma())
				for i := 0; i < steps; i++ {
					inA, _ := base.ScaleModelInput(xa, i)
					inB, _ := other.ScaleModelInput(xb, i)
					moA := synthModel(inA, eps)
					// The same epsilon, expressed in the other parametrisation.
					alpha, sigma := vpCoefficients(other, i)
					e := synthModel(inB, eps)
					moB := make([]float32, len(e))
					for j := range e {
						x0 := (float64(inB[j]) - sigma*float64(e[j])) / alpha
						if pred == "sample" {
							moB[j] = float32(x0)
						} else {
							moB[j] = float32(alpha*float64(e[j]) - sigma*x0)
						}
					}
					if xa, err = base.Step(moA, xa, i, testNoise(&c1)); err != nil {
						t.Fatal(err)
					}
					if xb, err = other.Step(moB, xb, i, testNoise(&c2)); err != nil {
						t.Fatal(err)
					}
				}
				if e := relErr(xb, xa); e > 1e-4 {
					t.Errorf("%s trajectory differs from epsilon by %.3g", pred, e)
				}
			})
		}
	}
}

// TestFinalStepDenoises: with final_sigmas_type zero the last step of the
// sigma-based schedulers lands on the model's x0 prediction, (x - sigma*eps)
// / alpha in VP terms.
func TestFinalStepDenoises(t *testing.T) {
	cfg := mustConfig(t, sd15(""))
	eps := testLatents(16, 2)
	for _, name := range []string{Euler, DPMPP2M, DPMPP2MKarras, UniPC} {
		s, err := New(cfg, name, 5)
		if err != nil {
			t.Fatal(err)
		}
		x := scaled(testLatents(16, 0), s.InitNoiseSigma())
		last := len(s.Timesteps()) - 1
		for i := 0; i < last; i++ {
			xin, _ := s.ScaleModelInput(x, i)
			if x, err = s.Step(synthModel(xin, eps), x, i, nil); err != nil {
				t.Fatal(err)
			}
		}
		xin, _ := s.ScaleModelInput(x, last)
		mo := synthModel(xin, eps)
		got, err := s.Step(mo, x, last, nil)
		if err != nil {
			t.Fatal(err)
		}
		sigma := float64(s.Sigmas()[last])
		want := make([]float32, len(x))
		for j := range x {
			if name == Euler {
				want[j] = float32(float64(x[j]) - sigma*float64(mo[j]))
				continue
			}
			a := 1 / math.Sqrt(1+sigma*sigma)
			want[j] = float32((float64(x[j]) - sigma*a*float64(mo[j])) / a)
		}
		if e := relErr(got, want); e > 1e-5 {
			t.Errorf("%s: last step rel err %.3g from the x0 prediction", name, e)
		}
	}
}

// TestInputsUntouched: the scheduler neither modifies nor keeps the
// caller's slices.
func TestInputsUntouched(t *testing.T) {
	cfg := mustConfig(t, sd15(""))
	for _, name := range Names() {
		s, _ := New(cfg, name, 4)
		x := testLatents(16, 0)
		mo := testLatents(16, 1)
		x0, mo0 := slices.Clone(x), slices.Clone(mo)
		xin, _ := s.ScaleModelInput(x, 0)
		xin[0] = 42
		next, err := s.Step(mo, x, 0, fixedNoise)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(x, x0) || !slices.Equal(mo, mo0) {
			t.Errorf("%s: inputs modified", name)
		}
		// Scribbling over the caller's buffers must not change step 1.
		ref, _ := New(cfg, name, 4)
		refNext, _ := ref.Step(mo0, x0, 0, fixedNoise)
		for i := range x {
			x[i], mo[i] = -7, 9
		}
		a, err := s.Step(mo0, next, 1, fixedNoise)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ref.Step(mo0, refNext, 1, fixedNoise)
		if !slices.Equal(a, b) {
			t.Errorf("%s: state aliases the caller's slices", name)
		}
	}
}
