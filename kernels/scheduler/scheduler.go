// Package scheduler implements the diffusion schedulers of the generation
// loop, bit-for-bit where float32 allows with Hugging Face diffusers.
//
// In the data flow (request -> tokenize -> text encode -> control image ->
// scheduler loop -> VAE -> PNG) this package owns the loop's arithmetic: it
// turns a scheduler_config.json and a step count into the timesteps the
// UNet and ControlNet are called at, scales the latents fed to them, and
// combines their (guided) noise prediction with the current latents into
// the next latents. It knows nothing about shapes or models: samples are
// flat float32 slices.
//
// A Scheduler value holds the state of one generation (step counter,
// multistep history) and is built fresh for each generation by New, so
// generations share nothing. A Scheduler is not safe for concurrent use.
package scheduler

import (
	"fmt"
	"slices"
)

// Scheduler names accepted by New, as the request's "scheduler" field
// spells them.
const (
	DDIM          = "ddim"            // DDIMScheduler
	PNDM          = "pndm"            // PNDMScheduler (PLMS, PRK steps skipped)
	Euler         = "euler"           // EulerDiscreteScheduler
	EulerA        = "euler_a"         // EulerAncestralDiscreteScheduler
	DPMPP2M       = "dpmpp_2m"        // DPMSolverMultistepScheduler (dpmsolver++, order 2)
	DPMPP2MKarras = "dpmpp_2m_karras" // the same with use_karras_sigmas=True
	UniPC         = "unipc"           // UniPCMultistepScheduler (bh2, order 2)
)

// Names lists the scheduler names New accepts.
func Names() []string {
	return []string{DDIM, PNDM, Euler, EulerA, DPMPP2M, DPMPP2MKarras, UniPC}
}

// Noise fills dst with standard normal samples, as torch.randn of a tensor
// with len(dst) elements would with the generation's generator (see
// kernels/noise: Generator.FillRandn has this signature). Stochastic
// schedulers call it at the point diffusers draws its noise, once per Step.
type Noise func(dst []float32)

// Scheduler runs the denoising loop of one generation. Call, for i from 0 to
// len(Timesteps())-1: x = ScaleModelInput(latents, i); run the model at
// Timesteps()[i]; latents = Step(modelOutput, latents, i, noise). The
// initial latents are noise scaled by InitNoiseSigma.
type Scheduler interface {
	// Name is the name the scheduler was built with.
	Name() string
	// Timesteps are the model timesteps, one per step (PNDM has one more
	// step than requested: its second timestep repeats).
	Timesteps() []float64
	// FloatTimesteps reports whether the model must receive the timesteps
	// as floating point values unrounded (the Euler family's are
	// fractional); otherwise they are integers and the model gets int64.
	FloatTimesteps() bool
	// Sigmas is the noise level table of the sigma-based schedulers (one
	// more entry than timesteps, the last the final sigma), nil for DDIM
	// and PNDM.
	Sigmas() []float32
	// InitNoiseSigma scales unit-variance initial noise into the first
	// latents.
	InitNoiseSigma() float32
	// NeedsNoise reports whether Step draws noise (DDIM with eta > 0,
	// Euler ancestral).
	NeedsNoise() bool
	// ScaleModelInput returns the model input for step stepIndex, a new
	// slice; sample is not modified.
	ScaleModelInput(sample []float32, stepIndex int) ([]float32, error)
	// Step returns the latents after step stepIndex, a new slice, from the
	// model's output for sample. noise may be nil unless NeedsNoise. Steps
	// must be taken in order for the multistep schedulers (PNDM, DPM-Solver,
	// UniPC), which keep a history; the inputs are not modified or
	// retained.
	Step(modelOutput, sample []float32, stepIndex int, noise Noise) ([]float32, error)
}

// Options are per-generation settings that are not part of the scheduler
// config, as diffusers pipelines pass them to scheduler.step.
type Options struct {
	// Eta is DDIM's noise weight: 0 (the pipelines' default) is
	// deterministic DDIM, 1 is DDPM-like ancestral sampling. Only DDIM
	// reads it.
	Eta float64
}

// maxSteps bounds the inference step count.
const maxSteps = 1000

// New builds the named scheduler (see Names) from cfg for numSteps
// inference steps, as SchedulerClass.from_config(cfg) followed by
// set_timesteps(numSteps) does in diffusers.
func New(cfg Config, name string, numSteps int) (Scheduler, error) {
	return NewWithOptions(cfg, name, numSteps, Options{})
}

// NewWithOptions is New with per-generation options.
func NewWithOptions(cfg Config, name string, numSteps int, opts Options) (Scheduler, error) {
	kind, ok := kinds[name]
	if !ok {
		return nil, fmt.Errorf("scheduler: unknown scheduler %q (want one of %q)", name, Names())
	}
	if numSteps < 1 || numSteps > maxSteps {
		return nil, fmt.Errorf("scheduler %s: num_inference_steps %d out of range [1, %d]", name, numSteps, maxSteps)
	}
	s, err := resolve(cfg, kind)
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", name, err)
	}
	if name == DPMPP2MKarras {
		s.karras = true
	}
	if numSteps > s.numTrain {
		return nil, fmt.Errorf("scheduler %s: num_inference_steps %d exceeds num_train_timesteps %d", name, numSteps, s.numTrain)
	}
	train, err := newTrainSchedule(s)
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", name, err)
	}
	var sch Scheduler
	switch kind {
	case kindDDIM:
		sch, err = newDDIM(s, train, numSteps, opts.Eta)
	case kindPNDM:
		sch, err = newPNDM(s, train, numSteps)
	case kindEuler:
		sch, err = newEuler(s, train, numSteps, false)
	case kindEulerA:
		sch, err = newEuler(s, train, numSteps, true)
	case kindDPM:
		sch, err = newDPMSolver(s, train, numSteps)
	case kindUniPC:
		sch, err = newUniPC(s, train, numSteps)
	}
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", name, err)
	}
	sch.(interface{ setName(string) }).setName(name)
	return sch, nil
}

// base holds what every scheduler exposes.
type base struct {
	name       string
	timesteps  []float64
	floatSteps bool
	sigmas     []float32
	initSigma  float32
	noisy      bool
}

func (b *base) Name() string            { return b.name }
func (b *base) Timesteps() []float64    { return slices.Clone(b.timesteps) }
func (b *base) FloatTimesteps() bool    { return b.floatSteps }
func (b *base) Sigmas() []float32       { return slices.Clone(b.sigmas) }
func (b *base) InitNoiseSigma() float32 { return b.initSigma }
func (b *base) NeedsNoise() bool        { return b.noisy }
func (b *base) setName(name string)     { b.name = name }

// checkStep validates the arguments every Step shares.
func (b *base) checkStep(modelOutput, sample []float32, stepIndex int) error {
	if stepIndex < 0 || stepIndex >= len(b.timesteps) {
		return fmt.Errorf("scheduler %s: step %d out of range [0, %d)", b.name, stepIndex, len(b.timesteps))
	}
	if len(modelOutput) != len(sample) {
		return fmt.Errorf("scheduler %s: step %d: model output has %d elements, sample %d", b.name, stepIndex, len(modelOutput), len(sample))
	}
	return nil
}

// checkIndex validates a step index for ScaleModelInput.
func (b *base) checkIndex(stepIndex int) error {
	if stepIndex < 0 || stepIndex >= len(b.timesteps) {
		return fmt.Errorf("scheduler %s: step %d out of range [0, %d)", b.name, stepIndex, len(b.timesteps))
	}
	return nil
}

// drawNoise asks the caller's noise source for len(n) samples.
func (b *base) drawNoise(noise Noise, n, stepIndex int) ([]float32, error) {
	if noise == nil {
		return nil, fmt.Errorf("scheduler %s: step %d needs noise and none was given", b.name, stepIndex)
	}
	out := make([]float32, n)
	noise(out)
	return out, nil
}

// ScaleModelInput is the identity for the schedulers that work on
// unscaled latents (all but the Euler family, which override it).
func (b *base) ScaleModelInput(sample []float32, stepIndex int) ([]float32, error) {
	if err := b.checkIndex(stepIndex); err != nil {
		return nil, err
	}
	return append([]float32(nil), sample...), nil
}

// sequence enforces in-order stepping on samples of one size for the
// multistep schedulers, whose history is only meaningful step after step.
type sequence struct {
	next int // the step index expected next
	size int // the sample size of step 0
}

// check validates a step and, when it passes, counts it as taken.
func (q *sequence) check(name string, stepIndex, size int) error {
	if stepIndex != q.next {
		return fmt.Errorf("scheduler %s: step %d taken out of order (next is step %d; build a new scheduler per generation)", name, stepIndex, q.next)
	}
	if stepIndex == 0 {
		q.size = size
	} else if size != q.size {
		return fmt.Errorf("scheduler %s: step %d: sample has %d elements, earlier steps %d", name, stepIndex, size, q.size)
	}
	q.next++
	return nil
}
