package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/controlfn/controlfn/internal/memlimit"
	"github.com/controlfn/controlfn/kernels/imageproc"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/noise"
	"github.com/controlfn/controlfn/kernels/scheduler"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/gomlx/gomlx/core/tensors"
)

// Generate runs one generation. It checks ctx before each stage and
// between denoising steps (a running step is not interrupted), returning
// an error that wraps ctx.Err(); the Pipeline stays usable. Errors caused
// by the request are *RequestError.
func (p *Pipeline) Generate(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, stopped(err, "before starting")
	}
	if err := p.acquire(ctx); err != nil {
		return nil, err
	}
	defer p.release()
	g := &generation{p: p, ctx: ctx, res: &Result{Seed: req.Seed}}
	g.res.Timings.Queue = time.Since(start)
	if err := g.run(req); err != nil {
		return nil, err
	}
	g.res.Timings.Total = time.Since(start)
	return g.res, nil
}

// generation is the state of one Generate call.
type generation struct {
	p   *Pipeline
	ctx context.Context
	req Request
	res *Result

	cfg     bool // classifier-free guidance: rows [uncond..., cond...]
	shape   shapeKey
	step    *nn.Program
	decoder *nn.Program
	embeds  *tensors.Tensor   // [rows, tokens, hidden]
	images  []*tensors.Tensor // per ControlNet [rows, 3, H, W]
	owned   []*tensors.Tensor // inputs to free at the end
}

// setup validates the request and derives the generation's shape.
func (g *generation) setup(req Request) error {
	p := g.p
	r, err := p.normalize(req)
	if err != nil {
		return err
	}
	g.req = r
	g.res.Format, g.res.Width, g.res.Height = r.Format, r.Width, r.Height
	// diffusers: do_classifier_free_guidance = guidance_scale > 1.
	g.cfg = r.GuidanceScale > 1
	g.shape = shapeKey{r.NumImages, r.Height / p.vaeFactor, r.Width / p.vaeFactor}
	return nil
}

func (g *generation) run(req Request) error {
	p := g.p
	defer func() {
		// Only frees device memory early; the GC would otherwise.
		for _, t := range g.owned {
			_ = t.FinalizeAll()
		}
	}()
	if err := g.setup(req); err != nil {
		return err
	}
	r := g.req
	sched, err := scheduler.NewWithOptions(p.sched, r.Scheduler, r.Steps, scheduler.Options{Eta: r.Eta})
	if err != nil {
		field := "num_inference_steps"
		if !slices.Contains(scheduler.Names(), r.Scheduler) {
			field = "scheduler"
		}
		return &RequestError{Field: field, Err: err}
	}
	g.res.Timesteps = sched.Timesteps()

	// Control images first: a bad image is the request's fault and
	// should not wait for a compile.
	if err := g.checkpoint("before preparing the control images"); err != nil {
		return err
	}
	t := time.Now()
	if err := g.prepareControls(); err != nil {
		return err
	}
	g.res.Timings.ControlPrep = since(&t)
	if err := g.programs(); err != nil {
		return err
	}
	g.res.Timings.Compile = since(&t)
	if err := g.encodePrompts(); err != nil {
		return err
	}
	latents, err := g.denoise(sched)
	if err != nil {
		return err
	}
	g.res.Latents = latents
	if err := g.checkpoint("before decoding"); err != nil {
		return err
	}
	memlimit.BetweenPrograms()
	return g.decode()
}

// checkpoint reports a cancelled or expired context.
func (g *generation) checkpoint(stage string) error {
	if err := g.ctx.Err(); err != nil {
		return stopped(err, stage)
	}
	return nil
}

func stopped(err error, stage string) error {
	what := "cancelled"
	if errors.Is(err, context.DeadlineExceeded) {
		what = "timed out"
	}
	return fmt.Errorf("pipeline: generation %s %s: %w", what, stage, err)
}

// keep registers an input tensor to free when the generation ends.
func (g *generation) keep(t *tensors.Tensor) *tensors.Tensor {
	g.owned = append(g.owned, t)
	return t
}

// textPlan says which prompts need the text encoder, their texts in the
// order encoded, and the encoders that run them.
func (g *generation) textPlan() (needPos, needNeg bool, texts []string, keys []encoderKey) {
	r := g.req
	needPos = r.PromptEmbeds == nil
	needNeg = g.cfg && r.NegativePromptEmbeds == nil
	if needPos && needNeg && g.p.clipSkip == 0 {
		// One batch-2 run, in diffusers' row order [negative, positive].
		return needPos, needNeg, []string{r.NegativePrompt, r.Prompt}, []encoderKey{{2, 0}}
	}
	if needNeg {
		// diffusers applies clip_skip to the prompt only.
		texts, keys = append(texts, r.NegativePrompt), append(keys, encoderKey{1, 0})
	}
	if needPos {
		texts, keys = append(texts, r.Prompt), append(keys, encoderKey{1, g.p.clipSkip})
	}
	return needPos, needNeg, texts, keys
}

// programs looks up (or compiles) every program the generation runs.
func (g *generation) programs() error {
	p := g.p
	var err error
	if g.step, err = p.step(stepKey{g.shape, g.cfg}, true); err != nil {
		return err
	}
	if g.decoder, err = p.decoder(g.shape, true); err != nil {
		return err
	}
	_, _, _, keys := g.textPlan()
	for _, k := range keys {
		if _, err := p.encoder(k, true); err != nil {
			return err
		}
	}
	return nil
}

// encodePrompts builds the prompt embeddings of every row, as diffusers'
// encode_prompt: each prompt repeated NumImages times, and with guidance
// the negative rows first.
func (g *generation) encodePrompts() error {
	p, r := g.p, g.req
	pos, neg := r.PromptEmbeds, r.NegativePromptEmbeds
	needPos, needNeg, texts, keys := g.textPlan()
	if len(texts) > 0 {
		if err := g.checkpoint("before tokenizing"); err != nil {
			return err
		}
		t := time.Now()
		ids := make([]int32, 0, len(texts)*p.tokens)
		for _, text := range texts {
			enc, err := p.tok.EncodePadded(text, p.tokens)
			if err != nil {
				return fmt.Errorf("pipeline: tokenize: %w", err)
			}
			ids = append(ids, enc.IDs...)
		}
		g.res.Timings.Tokenize = since(&t)
		if err := g.checkpoint("before encoding the prompts"); err != nil {
			return err
		}
		var out []float32
		for i, k := range keys {
			e := p.encoders[k]
			n := k.batch * p.tokens
			emb, err := e.Encode(ids[:n])
			if err != nil {
				return fmt.Errorf("pipeline: encode prompt %d: %w", i, err)
			}
			ids = ids[n:]
			out = append(out, emb...)
		}
		g.res.Timings.TextEncode = since(&t)
		row := p.tokens * p.hidden
		if needNeg {
			neg, out = out[:row], out[row:]
		}
		if needPos {
			pos = out[:row]
		}
	}

	n := r.NumImages
	rows := n
	if g.cfg {
		rows *= 2
	}
	data := make([]float32, 0, rows*len(pos))
	if g.cfg {
		for range n {
			data = append(data, neg...)
		}
	}
	for range n {
		data = append(data, pos...)
	}
	g.embeds = g.keep(tensors.FromFlatDataAndDimensions(data, rows, p.tokens, p.hidden))
	return nil
}

// prepareControls turns each control input into its [rows, 3, H, W]
// tensor: preprocessed, repeated per image, doubled for guidance.
func (g *generation) prepareControls() error {
	p, r := g.p, g.req
	for i, c := range r.Controls {
		field := "control_image"
		if len(r.Controls) > 1 {
			field = fmt.Sprintf("control_image[%d]", i)
		}
		img := imageproc.Tensor{Shape: []int{1, 3, r.Height, r.Width}, Data: c.Tensor}
		if c.Image != nil {
			var err error
			img, err = imageproc.Prepare(c.Image, imageproc.Options{
				Width:     r.Width,
				Height:    r.Height,
				MaxPixels: p.limits.MaxControlPixels,
				Canny:     c.Canny,
				CannyLow:  c.CannyLow,
				CannyHigh: c.CannyHigh,
			})
			if err != nil {
				return &RequestError{Field: field, Err: err}
			}
		}
		img, err := imageproc.RepeatInterleave(img, r.NumImages)
		if err != nil {
			return fmt.Errorf("pipeline: %s: %w", field, err)
		}
		if g.cfg {
			// In guess mode diffusers feeds the ControlNet the conditional
			// rows only; the fused step runs it on every row and zeroes
			// the unconditional rows' residuals through their scales,
			// which gives the same sums.
			if img, err = imageproc.Tile(img, 2); err != nil {
				return fmt.Errorf("pipeline: %s: %w", field, err)
			}
		}
		g.images = append(g.images, g.keep(tensors.FromFlatDataAndDimensions(img.Data, img.Shape...)))
	}
	return nil
}

// controlScales are the [rows, skips+1] residual scales of every
// ControlNet at step i of numSteps: conditioning scale times diffusers'
// controlnet_keep, guess mode's ramp, zero unconditional rows in guess
// mode.
func (g *generation) controlScales(i, numSteps int) []*tensors.Tensor {
	r := g.req
	out := make([]*tensors.Tensor, len(g.p.cnets))
	for k, cn := range g.p.cnets {
		c := r.Controls[k]
		// keep = 1 - float(i/len(timesteps) < start or (i+1)/len(timesteps) > end)
		keep := 1.0
		if float64(i)/float64(numSteps) < c.GuidanceStart || float64(i+1)/float64(numSteps) > c.GuidanceEnd {
			keep = 0
		}
		scale := float32(c.Scale * keep)
		skips := cn.Config.NumSkips()
		cond := unet.UniformScales(skips, scale)
		if r.GuessMode {
			cond = unet.GuessModeScales(skips, scale)
		}
		rows := make([][]float32, 0, 2*r.NumImages)
		if g.cfg {
			uncond := cond
			if r.GuessMode {
				uncond = make([]float32, skips+1)
			}
			for range r.NumImages {
				rows = append(rows, uncond)
			}
		}
		for range r.NumImages {
			rows = append(rows, cond)
		}
		out[k] = tensors.FromValue(rows)
	}
	return out
}

// denoise runs the scheduler loop and returns the final latents.
func (g *generation) denoise(sched scheduler.Scheduler) ([]float32, error) {
	p, r := g.p, g.req
	start := time.Now()
	gen := noise.NewGenerator(r.Seed)
	var latents []float32
	if r.Latents != nil {
		latents = slices.Clone(r.Latents)
	} else {
		// One draw of the whole batch, as randn_tensor with one generator.
		latents = gen.Randn(r.NumImages, p.latentChannels, g.shape.latentH, g.shape.latentW)
	}
	sigma := sched.InitNoiseSigma()
	for i := range latents {
		latents[i] *= sigma
	}
	var stepNoise scheduler.Noise
	if sched.NeedsNoise() {
		// diffusers passes the pipeline's generator to scheduler.step.
		stepNoise = gen.FillRandn
	}

	timesteps := sched.Timesteps()
	rows := r.NumImages
	if g.cfg {
		rows *= 2
	}
	dims := []int{rows, p.latentChannels, g.shape.latentH, g.shape.latentW}
	g.res.Timings.Steps = make([]time.Duration, 0, len(timesteps))
	for i, ts := range timesteps {
		if err := g.checkpoint(fmt.Sprintf("after %d of %d steps", i, len(timesteps))); err != nil {
			return nil, err
		}
		stepStart := time.Now()
		in, err := sched.ScaleModelInput(latents, i)
		if err != nil {
			return nil, fmt.Errorf("pipeline: step %d: %w", i, err)
		}
		g.res.Timings.Scheduler += time.Since(stepStart)
		if g.cfg {
			// cat([latents] * 2): scaling is elementwise, so scaling
			// first and doubling after is the same.
			in = append(in, in...)
		}
		args := []*tensors.Tensor{
			tensors.FromFlatDataAndDimensions(in, dims...),
			// Euler's fractional timesteps reach the model unrounded; the
			// others are integers, exact in float32.
			tensors.FromScalar(float32(ts)),
			g.embeds,
		}
		scales := g.controlScales(i, len(timesteps))
		for k := range g.images {
			args = append(args, g.images[k], scales[k])
		}
		outs, err := g.step.Run(args...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: step %d: %w", i, err)
		}
		pred, err := tensors.CopyFlatData[float32](outs[0])
		for _, t := range outs {
			_ = t.FinalizeAll()
		}
		for _, t := range append(args[:2:2], scales...) {
			_ = t.FinalizeAll()
		}
		if err != nil {
			return nil, fmt.Errorf("pipeline: step %d: read noise prediction: %w", i, err)
		}
		schedStart := time.Now()
		if g.cfg {
			pred = guide(pred, float32(r.GuidanceScale))
		}
		if latents, err = sched.Step(pred, latents, i, stepNoise); err != nil {
			return nil, fmt.Errorf("pipeline: step %d: %w", i, err)
		}
		g.res.Timings.Scheduler += time.Since(schedStart)
		g.res.Timings.Steps = append(g.res.Timings.Steps, time.Since(stepStart))
		if r.OnStep != nil {
			r.OnStep(i, ts, latents)
		}
	}
	g.res.Timings.Denoise = time.Since(start)
	return latents, nil
}

// guide combines the unconditional first half and conditional second half
// of a prediction: u + scale·(c − u), in float32 as torch computes it.
func guide(pred []float32, scale float32) []float32 {
	half := len(pred) / 2
	u, c := pred[:half], pred[half:]
	out := make([]float32, half)
	for i := range out {
		// The explicit conversion keeps the compiler from fusing the
		// multiply and add (torch rounds each).
		out[i] = u[i] + float32(scale*(c[i]-u[i]))
	}
	return out
}

// decode runs the VAE and encodes the images.
func (g *generation) decode() error {
	p, r := g.p, g.req
	t := time.Now()
	dims := []int{r.NumImages, p.latentChannels, g.shape.latentH, g.shape.latentW}
	in := g.keep(tensors.FromFlatDataAndDimensions(slices.Clone(g.res.Latents), dims...))
	outs, err := g.decoder.Run(in)
	if err != nil {
		return fmt.Errorf("pipeline: vae decode: %w", err)
	}
	decoded, err := tensors.CopyFlatData[float32](outs[0])
	for _, t := range outs {
		_ = t.FinalizeAll()
	}
	if err != nil {
		return fmt.Errorf("pipeline: vae decode: read image: %w", err)
	}
	if want := r.NumImages * r.Height * r.Width * 3; len(decoded) != want {
		return fmt.Errorf("pipeline: vae decode: %d values, want %d", len(decoded), want)
	}
	g.res.Decoded = decoded
	g.res.Timings.VAEDecode = since(&t)

	if err := g.checkpoint("before encoding the images"); err != nil {
		return err
	}
	g.res.Pixels = toUint8(decoded)
	imgs := splitImages(g.res.Pixels, r.NumImages, r.Width, r.Height)
	for i, img := range imgs {
		data, err := encodeImage(img, r.Format, r.Quality)
		if err != nil {
			return fmt.Errorf("pipeline: encode image %d: %w", i, err)
		}
		g.res.Images = append(g.res.Images, data)
	}
	if len(imgs) > 1 {
		if g.res.Grid, err = encodeImage(grid(imgs), r.Format, r.Quality); err != nil {
			return fmt.Errorf("pipeline: encode grid: %w", err)
		}
	}
	g.res.Timings.Encode = since(&t)
	return nil
}
