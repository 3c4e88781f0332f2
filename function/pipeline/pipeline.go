package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/imageproc"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/scheduler"
	"github.com/controlfn/controlfn/kernels/tokenizer"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
	"github.com/gomlx/compute"
)

// Bucket is a shape the pipeline compiles its programs for.
type Bucket struct {
	Width, Height int
	NumImages     int // 0 means 1
}

// Options configure a Pipeline.
type Options struct {
	// Backend runs the programs. Nil creates the Go backend
	// (nn.NewBackend("go")), which the Pipeline then owns and finalizes
	// on Close; a given backend stays the caller's.
	Backend compute.Backend
	// Precision says how stored weights reach the backend.
	Precision nn.Precision
	// ClipSkip is diffusers' clip_skip: 0 uses the text encoder's last
	// hidden state.
	ClipSkip int
	// Buckets are compiled by New (the warm shapes). Others are compiled
	// on first use unless FixedBuckets is set.
	Buckets []Bucket
	// FixedBuckets refuses requests outside Buckets instead of compiling
	// for them while the caller waits.
	FixedBuckets bool
	// Limits bound requests; zero fields take their defaults.
	Limits Limits
	// UNetLoRAs and TextEncoderLoRAs are applied unmerged, beside their
	// weights in the graph (nn.Weights.WithLoRAs): the evaluation's
	// reference configuration. Bundles ship LoRAs merged instead. New
	// fails if a warm bucket's programs leave one of them unapplied.
	UNetLoRAs, TextEncoderLoRAs *nn.LoRAs
}

// Pipeline runs generations on one loaded model. It keeps the weights on
// the backend and every compiled program for the life of the Pipeline.
// Generations run one at a time: concurrent calls to Generate queue.
type Pipeline struct {
	backend    compute.Backend
	ownBackend bool
	limits     Limits
	clipSkip   int
	fixed      bool

	tok       *tokenizer.Tokenizer
	textModel *clip.Model
	textW     *nn.Weights
	unet      *unet.UNet
	unetW     *nn.Weights
	cnets     []*unet.ControlNet
	cnetW     []*nn.Weights
	vae       *vae.Model
	vaeW      *nn.Weights
	sched     scheduler.Config

	vaeFactor      int // pixels per latent pixel
	latentChannels int
	tokens         int // prompt length (77)
	hidden         int // prompt embedding width (cross_attention_dim)

	// sem holds the right to run: one generation at a time, since a
	// program is safe for one caller at a time. It also guards the
	// program caches and closed.
	sem      chan struct{}
	encoders map[encoderKey]*clip.Encoder
	steps    map[stepKey]*nn.Program
	decoders map[shapeKey]*nn.Program

	// tempMu guards temporaries, which WorkingMemory reads without
	// waiting for the running generation: the largest temporary memory of
	// a shape's step and decoder programs, and of the text encoders
	// (shape zero).
	tempMu      sync.Mutex
	temporaries map[shapeKey]int64
	closed      bool
}

type encoderKey struct{ batch, clipSkip int }

type shapeKey struct{ batch, latentH, latentW int }

type stepKey struct {
	shapeKey
	cfg bool
}

// New builds a Pipeline from components and compiles the programs of
// opts.Buckets.
func New(c *Components, opts Options) (_ *Pipeline, err error) {
	if c == nil {
		return nil, errors.New("pipeline: no components")
	}
	p := &Pipeline{
		backend:  opts.Backend,
		limits:   opts.Limits,
		clipSkip: opts.ClipSkip,
		fixed:    opts.FixedBuckets,
		tok:      c.Tokenizer,
		sem:      make(chan struct{}, 1),
		encoders: map[encoderKey]*clip.Encoder{},
		steps:    map[stepKey]*nn.Program{},
		decoders: map[shapeKey]*nn.Program{},

		temporaries: map[shapeKey]int64{},
	}
	if p.limits.MaxPixels <= 0 {
		p.limits.MaxPixels = 1024 * 1024
	}
	if p.limits.MaxImages <= 0 {
		p.limits.MaxImages = 8
	}
	if p.limits.MaxControlPixels <= 0 {
		p.limits.MaxControlPixels = imageproc.DefaultMaxPixels
	}
	if err := p.loadModels(c); err != nil {
		return nil, err
	}
	if p.backend == nil {
		if p.backend, err = nn.NewBackend("go"); err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		p.ownBackend = true
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.textW = nn.NewWeights(p.backend, c.TextEncoder.Weights, opts.Precision)
	p.unetW = nn.NewWeights(p.backend, c.UNet.Weights, opts.Precision)
	for _, m := range c.ControlNets {
		p.cnetW = append(p.cnetW, nn.NewWeights(p.backend, m.Weights, opts.Precision))
	}
	p.vaeW = nn.NewWeights(p.backend, c.VAE.Weights, opts.Precision)
	if opts.UNetLoRAs != nil {
		p.unetW.WithLoRAs(*opts.UNetLoRAs)
	}
	if opts.TextEncoderLoRAs != nil {
		p.textW.WithLoRAs(*opts.TextEncoderLoRAs)
	}

	for _, b := range opts.Buckets {
		if err := p.warm(b); err != nil {
			return nil, err
		}
	}
	for _, w := range append([]*nn.Weights{p.textW, p.unetW, p.vaeW}, p.cnetW...) {
		w.DropScratch()
	}
	if len(opts.Buckets) > 0 {
		for _, m := range []struct {
			name string
			w    *nn.Weights
		}{{"UNet", p.unetW}, {"text encoder", p.textW}} {
			if unused := m.w.UnusedLoRAs(); len(unused) > 0 {
				return nil, fmt.Errorf("pipeline: %d %s LoRA targets are in no layer of the model (first %q)", len(unused), m.name, unused[0])
			}
		}
	}
	return p, nil
}

// loadModels checks the components fit together: one text embedding width,
// one downscale factor from pixels to latents.
func (p *Pipeline) loadModels(c *Components) error {
	var err error
	if c.TextEncoder.Weights == nil || c.UNet.Weights == nil || c.VAE.Weights == nil {
		return errors.New("pipeline: components need text encoder, UNet and VAE weights")
	}
	if c.Tokenizer == nil {
		return errors.New("pipeline: components have no tokenizer")
	}
	if len(c.ControlNets) == 0 {
		return errors.New("pipeline: components have no ControlNet")
	}
	if p.textModel, err = clip.New(c.TextEncoder.Config); err != nil {
		return fmt.Errorf("pipeline: text encoder: %w", err)
	}
	if layers := c.TextEncoder.Config.NumHiddenLayers; p.clipSkip < 0 || p.clipSkip >= layers {
		return fmt.Errorf("pipeline: clip skip %d out of range [0, %d)", p.clipSkip, layers)
	}
	if p.unet, err = unet.NewUNet(c.UNet.Config); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	for i, m := range c.ControlNets {
		if m.Weights == nil {
			return fmt.Errorf("pipeline: ControlNet %d has no weights", i)
		}
		if len(m.Config.UpBlockTypes) > 0 {
			return fmt.Errorf("pipeline: ControlNet %d has a UNet config (up blocks), not a ControlNetModel one", i)
		}
		cn, err := unet.NewControlNet(m.Config)
		if err != nil {
			return fmt.Errorf("pipeline: ControlNet %d: %w", i, err)
		}
		p.cnets = append(p.cnets, cn)
	}
	if p.vae, err = vae.New(c.VAE.Config); err != nil {
		return fmt.Errorf("pipeline: vae: %w", err)
	}
	if p.sched, err = scheduler.ParseConfig(c.SchedulerConfig); err != nil {
		return fmt.Errorf("pipeline: scheduler config: %w", err)
	}
	// Build every scheduler once so that a config none of them accepts
	// fails here, not as a request error.
	for _, name := range scheduler.Names() {
		if _, err := scheduler.New(p.sched, name, 1); err != nil {
			return fmt.Errorf("pipeline: scheduler config: %w", err)
		}
	}

	vc := p.vae.Config()
	p.vaeFactor = vc.DownscaleFactor()
	p.latentChannels = vc.LatentChannels
	p.tokens = p.tok.MaxLength()
	p.hidden = c.TextEncoder.Config.HiddenSize
	uc := &p.unet.Config
	switch {
	case p.tokens > c.TextEncoder.Config.MaxPositionEmbeddings:
		return fmt.Errorf("pipeline: tokenizer length %d exceeds the text encoder's %d positions", p.tokens, c.TextEncoder.Config.MaxPositionEmbeddings)
	case p.tok.VocabSize() > c.TextEncoder.Config.VocabSize:
		return fmt.Errorf("pipeline: tokenizer vocabulary %d exceeds the text encoder's %d", p.tok.VocabSize(), c.TextEncoder.Config.VocabSize)
	case p.hidden != uc.CrossAttentionDim:
		return fmt.Errorf("pipeline: text encoder width %d, UNet cross_attention_dim %d", p.hidden, uc.CrossAttentionDim)
	case p.latentChannels != uc.InChannels || p.latentChannels != uc.OutChannels:
		return fmt.Errorf("pipeline: VAE has %d latent channels, UNet takes %d and predicts %d", p.latentChannels, uc.InChannels, uc.OutChannels)
	}
	for i, cn := range p.cnets {
		// The conditioning embedding must bring the pixel-space control
		// image down to the latent size exactly.
		chans := len(cn.Config.ConditioningEmbeddingOutChannels)
		if chans == 0 {
			return fmt.Errorf("pipeline: ControlNet %d has no conditioning embedding", i)
		}
		if f := 1 << (chans - 1); f != p.vaeFactor {
			return fmt.Errorf("pipeline: ControlNet %d downscales its control image %d×, the VAE %d×", i, f, p.vaeFactor)
		}
		if cn.Config.ConditioningChannels != 3 {
			return fmt.Errorf("pipeline: ControlNet %d takes %d-channel control images, want RGB", i, cn.Config.ConditioningChannels)
		}
	}
	return nil
}

// warm compiles every program a bucket needs, with and without guidance.
func (p *Pipeline) warm(b Bucket) error {
	n := b.NumImages
	if n == 0 {
		n = 1
	}
	switch {
	case b.Width <= 0 || b.Height <= 0 || n < 0 || n > p.limits.MaxImages:
		return fmt.Errorf("pipeline: bucket %+v: sizes must be positive, images at most %d", b, p.limits.MaxImages)
	case b.Width%p.vaeFactor != 0 || b.Height%p.vaeFactor != 0:
		return fmt.Errorf("pipeline: bucket %+v: size is not a multiple of %d", b, p.vaeFactor)
	}
	for _, k := range p.encoderKeys() {
		if _, err := p.encoder(k, false); err != nil {
			return err
		}
	}
	s := shapeKey{n, b.Height / p.vaeFactor, b.Width / p.vaeFactor}
	for _, cfg := range []bool{true, false} {
		if _, err := p.step(stepKey{s, cfg}, false); err != nil {
			return fmt.Errorf("pipeline: bucket %+v: %w", b, err)
		}
	}
	if _, err := p.decoder(s, false); err != nil {
		return fmt.Errorf("pipeline: bucket %+v: %w", b, err)
	}
	return nil
}

// encoderKeys are the text encoders generations use. diffusers applies
// clip_skip to the prompt only, never to the negative prompt, so with a
// clip skip the two are encoded by different programs.
func (p *Pipeline) encoderKeys() []encoderKey {
	if p.clipSkip == 0 {
		return []encoderKey{{1, 0}, {2, 0}}
	}
	return []encoderKey{{1, p.clipSkip}, {1, 0}}
}

// errNotWarm is returned under FixedBuckets for a shape New did not compile.
var errNotWarm = errors.New("no compiled program for this size (not one of the pipeline's buckets)")

// encoder returns the text encoder for a batch and clip skip, compiling it
// on first use unless lazy compiles are refused.
func (p *Pipeline) encoder(k encoderKey, lazy bool) (*clip.Encoder, error) {
	if e, ok := p.encoders[k]; ok {
		return e, nil
	}
	if lazy && p.fixed {
		return nil, fmt.Errorf("pipeline: text encoder batch %d: %w", k.batch, errNotWarm)
	}
	e, err := clip.NewEncoder(p.textModel, p.textW, k.batch, p.tokens, k.clipSkip)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p.encoders[k] = e
	p.noteTemporaries(shapeKey{}, e.Program())
	return e, nil
}

// step returns the fused ControlNet+UNet step program for a shape, with
// the unconditional rows (cfg) or without.
func (p *Pipeline) step(k stepKey, lazy bool) (*nn.Program, error) {
	if prog, ok := p.steps[k]; ok {
		return prog, nil
	}
	batch := k.batch
	if k.cfg {
		batch *= 2
	}
	if lazy && p.fixed {
		return nil, &RequestError{Field: "width", Err: fmt.Errorf("%d×%d at batch %d: %w", k.latentW*p.vaeFactor, k.latentH*p.vaeFactor, k.batch, errNotWarm)}
	}
	sh := unet.StepShape{
		Batch:         batch,
		LatentHeight:  k.latentH,
		LatentWidth:   k.latentW,
		SeqLen:        p.tokens,
		CondScale:     p.vaeFactor,
		NumControlNet: len(p.cnets),
	}
	name := fmt.Sprintf("step_b%d_%dx%d_cn%d", batch, k.latentH, k.latentW, len(p.cnets))
	prog, err := unet.CompileStep(name, p.unet, p.unetW, p.cnets, p.cnetW, sh)
	if err != nil {
		// A shape the UNet cannot halve evenly fails here: it is the
		// request's size that is at fault.
		return nil, &RequestError{Field: "width", Err: fmt.Errorf("compile the denoising step for %d×%d: %w", k.latentW*p.vaeFactor, k.latentH*p.vaeFactor, err)}
	}
	p.steps[k] = prog
	p.noteTemporaries(k.shapeKey, prog)
	return prog, nil
}

// decoder returns the VAE decoder for a shape: diffusion latents in,
// postprocessed NHWC image in [0, 1] out.
func (p *Pipeline) decoder(k shapeKey, lazy bool) (*nn.Program, error) {
	if prog, ok := p.decoders[k]; ok {
		return prog, nil
	}
	if lazy && p.fixed {
		return nil, &RequestError{Field: "width", Err: fmt.Errorf("VAE decoder %d×%d at batch %d: %w", k.latentW*p.vaeFactor, k.latentH*p.vaeFactor, k.batch, errNotWarm)}
	}
	prog, err := p.vae.CompileDecoder(p.vaeW, k.batch, k.latentH, k.latentW, vae.DecodeOptions{FromDiffusion: true, Postprocess: true, ChannelsLast: true})
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p.decoders[k] = prog
	p.noteTemporaries(k, prog)
	return prog, nil
}

// decoderTemporaries is how many full-resolution float32 activations of
// the VAE decoder's first block width its program holds at its peak, for
// a shape whose programs are not compiled yet: the SD1.5 decoder's
// estimate (nn.Program.TemporaryBytes) is 643 MiB at 512×512, 5 × 4 B ×
// 128 channels per output pixel; the denoising step and the text encoder
// need less.
const decoderTemporaries = 5

// WorkingMemory estimates the most memory a generation of numImages
// images of width×height allocates above the weights: the largest
// temporary memory of its compiled programs (nn.Program.TemporaryBytes),
// or a rule of thumb before its decoder is compiled, with a quarter more
// for the backend's buffer size classes. The service sizes the
// collector's headroom with it (internal/memlimit); an underestimate costs
// more frequent collections, not failures. It is 0 for a size or count the
// Pipeline refuses anyway. It does not wait for a running generation.
func (p *Pipeline) WorkingMemory(width, height, numImages int) int64 {
	if width <= 0 || height <= 0 || width > p.limits.MaxPixels/height || numImages < 0 || numImages > p.limits.MaxImages {
		return 0
	}
	n := max(numImages, 1)
	var most int64
	if width%p.vaeFactor == 0 && height%p.vaeFactor == 0 {
		p.tempMu.Lock()
		if t, ok := p.temporaries[shapeKey{n, height / p.vaeFactor, width / p.vaeFactor}]; ok {
			most = max(t, p.temporaries[shapeKey{}])
		}
		p.tempMu.Unlock()
	}
	if most == 0 {
		channels := 0
		if bc := p.vae.Config().BlockOutChannels; len(bc) > 0 {
			channels = bc[0]
		}
		most = int64(n) * int64(width) * int64(height) * int64(channels) * 4 * decoderTemporaries
	}
	return most + most/4
}

// noteTemporaries records a compiled program's temporary memory for its
// shape (WorkingMemory).
func (p *Pipeline) noteTemporaries(k shapeKey, prog *nn.Program) {
	p.tempMu.Lock()
	defer p.tempMu.Unlock()
	p.temporaries[k] = max(p.temporaries[k], prog.TemporaryBytes())
}

// acquire waits for the right to run, or for ctx to end.
func (p *Pipeline) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return stopped(ctx.Err(), "waiting for the previous generation")
	}
	if p.closed {
		<-p.sem
		return errors.New("pipeline: closed")
	}
	return nil
}

func (p *Pipeline) release() { <-p.sem }

// Close releases every compiled program and, when the Pipeline created
// it, the backend. It waits for a running generation to finish.
func (p *Pipeline) Close() {
	p.sem <- struct{}{}
	defer p.release()
	if p.closed {
		return
	}
	p.closed = true
	for _, e := range p.encoders {
		e.Close()
	}
	for _, prog := range p.steps {
		prog.Close()
	}
	for _, prog := range p.decoders {
		prog.Close()
	}
	p.encoders, p.steps, p.decoders = nil, nil, nil
	if p.ownBackend && p.backend != nil {
		p.backend.Finalize()
	}
}

// since returns the time elapsed since *t and moves *t to now, so stages
// measured one after another share their boundaries.
func since(t *time.Time) time.Duration {
	now := time.Now()
	d := now.Sub(*t)
	*t = now
	return d
}

// Programs lists every compiled program (text encoders, denoising steps,
// VAE decoders), sorted by name. On a trace-only backend (kernels/hlo)
// these are the programs a bundle ships as StableHLO.
func (p *Pipeline) Programs() []*nn.Program {
	var out []*nn.Program
	for _, e := range p.encoders {
		out = append(out, e.Program())
	}
	for _, prog := range p.steps {
		out = append(out, prog)
	}
	for _, prog := range p.decoders {
		out = append(out, prog)
	}
	slices.SortFunc(out, func(a, b *nn.Program) int { return strings.Compare(a.Name(), b.Name()) })
	return out
}
