package schema

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
)

// Limits a request must respect; see the package documentation.
const (
	// MaxPromptBytes bounds prompt and negative_prompt. CLIP reads 77
	// tokens, which rarely take more than a few hundred bytes; the limit
	// leaves room for long prompts while keeping tokenizer work bounded.
	MaxPromptBytes = 4096
	// MaxImageBytes bounds the decoded control images of one request: the
	// Lambda synchronous payload limit, 6 MB (6 MiB).
	MaxImageBytes = 6 << 20
	// MaxImagePixels bounds the pixel count an image header may declare,
	// so that a few bytes cannot make the pipeline allocate gigabytes.
	MaxImagePixels = 4096 * 4096
	// MaxObjectKeyBytes is the object storage (S3) key length limit.
	MaxObjectKeyBytes = 1024

	MinSteps, MaxSteps                = 1, 150
	MinGuidance, MaxGuidance          = 0.0, 30.0
	MinCanny, MaxCanny                = 0, 1000
	MinCondScale, MaxCondScale        = 0.0, 5.0
	MinSide, MaxSide                  = 64, 2048 // width/height when the bundle lists no buckets
	DefaultClipLayers                 = 12       // CLIP ViT-L/14 text tower (SD1.x)
	MaxRandomSeed              uint64 = 1<<53 - 1
)

// Defaults of the model-independent fields; the package documentation
// explains the choices.
const (
	DefaultSteps         = 20
	DefaultGuidanceScale = 7.5
	DefaultScheduler     = "unipc"
	DefaultControlType   = ControlNone
	DefaultCannyLow      = 100
	DefaultCannyHigh     = 200
	DefaultCondScale     = 1.0
	DefaultGuidanceStart = 0.0
	DefaultGuidanceEnd   = 1.0
	DefaultNumImages     = 1
	DefaultOutputFormat  = FormatPNG
)

// Values of control_type.
const (
	ControlCanny = "canny" // run Canny edge detection on the image first
	ControlNone  = "none"  // the image already is a control map
)

// Values of output_format (and of ControlImage.Format).
const (
	FormatPNG  = "png"
	FormatJPEG = "jpeg"
)

// Scheduler names, as kernels/scheduler spells them.
const (
	SchedulerDDIM          = "ddim"
	SchedulerPNDM          = "pndm"
	SchedulerEuler         = "euler"
	SchedulerEulerA        = "euler_a"
	SchedulerDPMPP2M       = "dpmpp_2m"
	SchedulerDPMPP2MKarras = "dpmpp_2m_karras"
	SchedulerUniPC         = "unipc"
)

// Schedulers lists every scheduler name the contract knows. A bundle may
// offer fewer (ModelInfo.Schedulers).
func Schedulers() []string {
	return []string{SchedulerDDIM, SchedulerPNDM, SchedulerEuler, SchedulerEulerA,
		SchedulerDPMPP2M, SchedulerDPMPP2MKarras, SchedulerUniPC}
}

// Size is a generation size in pixels.
type Size struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

// ModelInfo is what validation needs to know about the loaded bundle.
type ModelInfo struct {
	// BuildID is the bundle's build id (a UUID), reported in responses.
	BuildID string `json:"build_id"`
	// Buckets are the sizes the bundle was compiled for; the first is the
	// default. Empty means any multiple of 8 from MinSide to MaxSide.
	Buckets []Size `json:"buckets"`
	// MaxImages bounds num_images (the compiled batch); 0 means 1.
	MaxImages int `json:"max_images"`
	// ControlNets is how many ControlNets condition the UNet; each needs a
	// control image.
	ControlNets int `json:"controlnets"`
	// Schedulers are the names the bundle offers; empty means Schedulers().
	Schedulers []string `json:"schedulers"`
	// ClipLayers is the text encoder's layer count, bounding clip_skip;
	// 0 means DefaultClipLayers.
	ClipLayers int `json:"clip_layers"`
}

func (info ModelInfo) maxImages() int { return max(info.MaxImages, 1) }

func (info ModelInfo) clipLayers() int {
	if info.ClipLayers <= 0 {
		return DefaultClipLayers
	}
	return info.ClipLayers
}

func (info ModelInfo) schedulers() []string {
	if len(info.Schedulers) == 0 {
		return Schedulers()
	}
	return info.Schedulers
}

// defaultScheduler is DefaultScheduler when the bundle offers it, else the
// bundle's first.
func (info ModelInfo) defaultScheduler() string {
	s := info.schedulers()
	if slices.Contains(s, DefaultScheduler) {
		return DefaultScheduler
	}
	return s[0]
}

func (info ModelInfo) defaultSize() Size {
	if len(info.Buckets) == 0 {
		return Size{512, 512}
	}
	return info.Buckets[0]
}

// Request is one generation request after Decode: every default applied,
// every per-ControlNet field in list form with ModelInfo.ControlNets
// entries. Marshalled with encoding/json it is a valid request body again,
// so clients build one with Defaults and send it.
type Request struct {
	Prompt         string `json:"prompt"`
	NegativePrompt string `json:"negative_prompt"`
	// ControlImages holds one image per ControlNet, whether the client sent
	// control_image or control_images.
	ControlImages []ControlImage `json:"control_images,omitempty"`
	// ControlType is ControlCanny or ControlNone per ControlNet.
	ControlType []string `json:"control_type,omitempty"`
	CannyLow    int      `json:"canny_low"`
	CannyHigh   int      `json:"canny_high"`
	// ConditioningScale multiplies each ControlNet's residuals.
	ConditioningScale []float64 `json:"controlnet_conditioning_scale,omitempty"`
	// GuidanceStart and GuidanceEnd are the fractions of the steps during
	// which each ControlNet is applied.
	GuidanceStart []float64 `json:"control_guidance_start,omitempty"`
	GuidanceEnd   []float64 `json:"control_guidance_end,omitempty"`
	GuessMode     bool      `json:"guess_mode"`
	Width         int       `json:"width"`
	Height        int       `json:"height"`
	Steps         int       `json:"num_inference_steps"`
	GuidanceScale float64   `json:"guidance_scale"`
	Scheduler     string    `json:"scheduler"`
	// Seed is nil when the client sent none; the server then draws one
	// with RandomSeed and reports it in the Response.
	Seed         *uint64 `json:"seed,omitempty"`
	NumImages    int     `json:"num_images"`
	OutputFormat string  `json:"output_format"`
	ClipSkip     int     `json:"clip_skip"`
}

// ControlImage is a control image as the request carries it: inline bytes
// (Data, with Format and size read from the header) or a reference to an
// object in storage (Key, optionally Bucket).
type ControlImage struct {
	Data          []byte
	Format        string // FormatPNG or FormatJPEG; "" for an object reference
	Width, Height int    // declared by the header; 0 for an object reference
	Bucket, Key   string
}

// IsObject reports whether the image is a storage reference to fetch.
func (c ControlImage) IsObject() bool { return c.Key != "" }

// MarshalJSON writes the wire form: a base64 string, or {"bucket","key"}.
func (c ControlImage) MarshalJSON() ([]byte, error) {
	if c.IsObject() {
		return json.Marshal(objectRef{Bucket: c.Bucket, Key: c.Key})
	}
	return json.Marshal(c.Data) // []byte marshals as padded standard base64
}

type objectRef struct {
	Bucket string `json:"bucket,omitempty"`
	Key    string `json:"key"`
}

// Defaults returns the request Decode makes of "{}" for the bundle info
// describes, minus what has no default: ControlImages and Seed are nil.
func Defaults(info ModelInfo) Request {
	size := info.defaultSize()
	n := max(info.ControlNets, 0)
	return Request{
		ControlType:       repeat(DefaultControlType, n),
		CannyLow:          DefaultCannyLow,
		CannyHigh:         DefaultCannyHigh,
		ConditioningScale: repeat(DefaultCondScale, n),
		GuidanceStart:     repeat(DefaultGuidanceStart, n),
		GuidanceEnd:       repeat(DefaultGuidanceEnd, n),
		Width:             size.Width,
		Height:            size.Height,
		Steps:             DefaultSteps,
		GuidanceScale:     DefaultGuidanceScale,
		Scheduler:         info.defaultScheduler(),
		NumImages:         DefaultNumImages,
		OutputFormat:      DefaultOutputFormat,
	}
}

// repeat returns n copies of v, nil for n == 0 so that a bundle without
// ControlNets yields the same Request before and after a JSON round trip.
func repeat[T any](v T, n int) []T {
	if n == 0 {
		return nil
	}
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// RandomSeed draws a seed for a request that has none, below 2^53 so that
// every JSON client can send it back exactly.
func RandomSeed() uint64 {
	return rand.Uint64N(MaxRandomSeed + 1)
}
