package pipeline

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Format is an output image encoding.
type Format string

// The output formats.
const (
	PNG  Format = "png"
	JPEG Format = "jpeg"
)

// DefaultJPEGQuality is used when a JPEG request gives no quality.
const DefaultJPEGQuality = 90

// Request is one generation. Fields map to StableDiffusionControlNetPipeline's
// arguments; the function layer fills the public defaults. Zero values that
// could not be meant literally take a default: NumImages 0 is 1, Format ""
// is PNG, Quality 0 is DefaultJPEGQuality, a Control's GuidanceEnd 0 is 1.
type Request struct {
	// Prompt and NegativePrompt are tokenized and encoded unless the
	// matching embeddings are given.
	Prompt, NegativePrompt string
	// PromptEmbeds and NegativePromptEmbeds are precomputed text encoder
	// outputs for one prompt, [77, cross_attention_dim] row-major, as
	// diffusers' prompt_embeds= and negative_prompt_embeds= (batch 1).
	PromptEmbeds, NegativePromptEmbeds []float32

	// Controls holds one control image per ControlNet of the pipeline.
	Controls []Control
	// GuessMode runs the ControlNets on the conditional rows only, with
	// guess mode's logspace scale ramp.
	GuessMode bool

	// Width and Height are the image size in pixels: positive multiples of
	// the VAE scale factor (8).
	Width, Height int
	// Steps is num_inference_steps.
	Steps int
	// GuidanceScale is the classifier-free guidance weight; at 1 or below
	// the unconditional pass is skipped, as diffusers does.
	GuidanceScale float64
	// Scheduler is a kernels/scheduler name ("ddim", "euler", ...).
	Scheduler string
	// Eta is DDIM's eta (0 is deterministic DDIM); other schedulers ignore it.
	Eta float64

	// Seed seeds the torch-compatible CPU generator that draws the initial
	// latents (when Latents is nil) and any scheduler noise.
	Seed uint64
	// Latents are the initial noise [NumImages, 4, Height/8, Width/8]
	// before scaling by init_noise_sigma, as diffusers' latents=.
	Latents []float32
	// NumImages is num_images_per_prompt: rows generated in one batch.
	NumImages int

	// Format and Quality choose the output encoding; Quality is JPEG's
	// 1..100.
	Format  Format
	Quality int

	// OnStep, when set, is called after each denoising step with the
	// latents ([NumImages, 4, h, w], diffusers' callback_on_step_end view).
	// It must not keep or modify the slice.
	OnStep func(step int, timestep float64, latents []float32)
}

// Control is the control input of one ControlNet.
type Control struct {
	// Image is an encoded PNG or JPEG: a control map, or a photo when
	// Canny is set. Exactly one of Image and Tensor is given.
	Image []byte
	// Canny turns the photo into an edge map first (cv2.Canny with
	// CannyLow and CannyHigh).
	Canny               bool
	CannyLow, CannyHigh int
	// Tensor is an already prepared control image [1, 3, Height, Width]
	// in [0, 1], row-major.
	Tensor []float32

	// Scale is controlnet_conditioning_scale for this ControlNet (0 turns
	// it off).
	Scale float64
	// GuidanceStart and GuidanceEnd are control_guidance_start/end: the
	// fraction of the steps during which this ControlNet is applied.
	GuidanceStart, GuidanceEnd float64
}

// RequestError reports a request value the pipeline cannot run. Field is
// the request field at fault, as the public schema names it.
type RequestError struct {
	Field string
	Err   error
}

func (e *RequestError) Error() string { return "pipeline: " + e.Field + ": " + e.Err.Error() }

// Unwrap exposes the cause (an imageproc error for a bad control image).
func (e *RequestError) Unwrap() error { return e.Err }

func badField(field, format string, args ...any) error {
	return &RequestError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Limits bound what a request may ask of the pipeline.
type Limits struct {
	// MaxPixels bounds Width×Height (default 1024×1024).
	MaxPixels int
	// MaxImages bounds NumImages (default 8).
	MaxImages int
	// MaxControlPixels bounds a decoded control image (default
	// imageproc.DefaultMaxPixels).
	MaxControlPixels int
}

// Timings are the wall-clock durations of a generation's stages.
type Timings struct {
	// Queue is the wait for the generation before this one to finish.
	Queue time.Duration
	// Compile is the time spent compiling programs for a shape that was
	// not warmed up.
	Compile     time.Duration
	Tokenize    time.Duration
	TextEncode  time.Duration
	ControlPrep time.Duration
	// Denoise is the whole scheduler loop, Steps each step in it;
	// Scheduler is the part of Denoise spent on the host in the scheduler
	// (input scaling, guidance, the step update), the rest being the
	// ControlNet + UNet program.
	Denoise   time.Duration
	Steps     []time.Duration
	Scheduler time.Duration
	VAEDecode time.Duration
	// Encode is PNG/JPEG encoding of every image and the grid.
	Encode time.Duration
	Total  time.Duration
}

// Result is a finished generation.
type Result struct {
	// Images are the encoded images, one per row.
	Images [][]byte
	// Grid is a preview of all images tiled (make_image_grid), encoded
	// the same way; nil for a single image.
	Grid   []byte
	Format Format
	Width  int
	Height int
	// Pixels are the images as PIL would hold them: [NumImages, Height,
	// Width, 3] uint8, round(x·255).
	Pixels []uint8
	// Decoded is the VAE output after (x/2 + 0.5).clamp(0, 1), [NumImages,
	// Height, Width, 3]: diffusers' output_type="np".
	Decoded []float32
	// Latents are the final latents [NumImages, 4, Height/8, Width/8].
	Latents []float32
	// Seed is the generator seed the generation used.
	Seed      uint64
	Timesteps []float64
	Timings   Timings
}

// errNaN is the cause for a non-finite number.
var errNaN = errors.New("not a finite number")

// normalize fills the zero-value defaults of r and checks every value that
// does not depend on the models. It returns a copy; r is not modified.
func (p *Pipeline) normalize(r Request) (Request, error) {
	if r.NumImages == 0 {
		r.NumImages = 1
	}
	if r.Format == "" {
		r.Format = PNG
	}
	if r.Quality == 0 {
		r.Quality = DefaultJPEGQuality
	}
	lim := p.limits
	switch {
	case r.Width <= 0 || r.Height <= 0:
		return r, badField("width", "size %dx%d must be positive", r.Width, r.Height)
	case r.Width%p.vaeFactor != 0:
		return r, badField("width", "%d is not a multiple of %d", r.Width, p.vaeFactor)
	case r.Height%p.vaeFactor != 0:
		return r, badField("height", "%d is not a multiple of %d", r.Height, p.vaeFactor)
	case r.Width > lim.MaxPixels/r.Height:
		return r, badField("width", "size %dx%d is over the limit of %d pixels", r.Width, r.Height, lim.MaxPixels)
	case r.NumImages < 1 || r.NumImages > lim.MaxImages:
		return r, badField("num_images", "%d out of range [1, %d]", r.NumImages, lim.MaxImages)
	case r.Steps < 1 || r.Steps > maxSteps:
		return r, badField("num_inference_steps", "%d out of range [1, %d]", r.Steps, maxSteps)
	case !finite(r.GuidanceScale):
		return r, badField("guidance_scale", "%v: %w", r.GuidanceScale, errNaN)
	case !finite(r.Eta) || r.Eta < 0:
		return r, badField("eta", "%v must be a finite number >= 0", r.Eta)
	case r.Format != PNG && r.Format != JPEG:
		return r, badField("format", "%q is not %q or %q", r.Format, PNG, JPEG)
	case r.Quality < 1 || r.Quality > 100:
		return r, badField("quality", "%d out of range [1, 100]", r.Quality)
	}
	if n := len(r.Controls); n != len(p.cnets) {
		return r, badField("control_image", "%d control images for %d ControlNets", n, len(p.cnets))
	}
	r.Controls = append([]Control(nil), r.Controls...)
	for i := range r.Controls {
		c := &r.Controls[i]
		if c.GuidanceEnd == 0 {
			c.GuidanceEnd = 1
		}
		// The field names index the lists of a multi-ControlNet request.
		suffix := ""
		if len(r.Controls) > 1 {
			suffix = fmt.Sprintf("[%d]", i)
		}
		switch {
		case (c.Image == nil) == (c.Tensor == nil):
			return r, badField("control_image"+suffix, "give exactly one of an encoded image and a prepared tensor")
		case c.Canny && c.Tensor != nil:
			return r, badField("control_type"+suffix, "canny needs an encoded image, not a prepared tensor")
		case !finite(c.Scale):
			return r, badField("controlnet_conditioning_scale"+suffix, "%v: %w", c.Scale, errNaN)
		case !finite(c.GuidanceStart) || c.GuidanceStart < 0:
			return r, badField("control_guidance_start"+suffix, "%v must be in [0, 1)", c.GuidanceStart)
		case !finite(c.GuidanceEnd) || c.GuidanceEnd > 1:
			return r, badField("control_guidance_end"+suffix, "%v must be in (0, 1]", c.GuidanceEnd)
		case c.GuidanceStart >= c.GuidanceEnd:
			return r, badField("control_guidance_start"+suffix, "%v must be below control_guidance_end %v", c.GuidanceStart, c.GuidanceEnd)
		}
		if c.Tensor != nil {
			if want := 3 * r.Width * r.Height; len(c.Tensor) != want {
				return r, badField("control_image"+suffix, "prepared tensor has %d values, want [1, 3, %d, %d]", len(c.Tensor), r.Height, r.Width)
			}
		}
	}
	embed := p.tokens * p.hidden
	if r.PromptEmbeds != nil && len(r.PromptEmbeds) != embed {
		return r, badField("prompt_embeds", "%d values, want [%d, %d]", len(r.PromptEmbeds), p.tokens, p.hidden)
	}
	if r.NegativePromptEmbeds != nil && len(r.NegativePromptEmbeds) != embed {
		return r, badField("negative_prompt_embeds", "%d values, want [%d, %d]", len(r.NegativePromptEmbeds), p.tokens, p.hidden)
	}
	if r.Latents != nil {
		if want := r.NumImages * p.latentChannels * (r.Height / p.vaeFactor) * (r.Width / p.vaeFactor); len(r.Latents) != want {
			return r, badField("latents", "%d values, want [%d, %d, %d, %d]", len(r.Latents), r.NumImages, p.latentChannels, r.Height/p.vaeFactor, r.Width/p.vaeFactor)
		}
		for i, v := range r.Latents {
			if !finite(float64(v)) {
				return r, badField("latents", "value %d: %w", i, errNaN)
			}
		}
	}
	return r, nil
}

// maxSteps bounds num_inference_steps (the schedulers' own limit).
const maxSteps = 1000

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
