package schema

import "time"

// Response is the result of one generation.
type Response struct {
	// RequestID is a UUID the server assigns to the invocation; it also
	// appears in logs and in the X-Request-Id header.
	RequestID string `json:"request_id"`
	// BuildID is the build id of the bundle that generated the images.
	BuildID string `json:"build_id"`
	// Seed is the seed used: the request's, or the one drawn for it.
	Seed uint64 `json:"seed"`
	// Steps is the number of denoising steps run.
	Steps  int `json:"steps"`
	Width  int `json:"width"`
	Height int `json:"height"`
	// Images holds num_images images in generation order.
	Images []Image `json:"images"`
	// Grid tiles all images into one, present when there are several.
	Grid *Image `json:"grid,omitempty"`
	// TimingsMS holds wall time per pipeline stage in milliseconds, keyed
	// by the Stage names (a pipeline may add its own).
	TimingsMS Timings `json:"timings_ms"`
}

// Image is one output image: inline bytes, or a reference to the object
// where an event-driven invocation stored it.
type Image struct {
	// MIME is "image/png" or "image/jpeg".
	MIME string `json:"mime"`
	// Data holds the encoded image; JSON carries it as standard base64.
	Data   []byte `json:"data,omitempty"`
	Bucket string `json:"bucket,omitempty"`
	Key    string `json:"key,omitempty"`
}

// MIMEType returns the media type of an output format name.
func MIMEType(format string) string {
	if format == FormatJPEG {
		return "image/jpeg"
	}
	return "image/png"
}

// Stage names used as Timings keys.
const (
	StageDecode     = "decode"      // request decoding and validation
	StageTokenize   = "tokenize"    // prompt to token ids
	StageTextEncode = "text_encode" // CLIP, conditional and unconditional
	StageControl    = "control"     // control image decode, Canny, resize
	StageDenoise    = "denoise"     // the scheduler loop (ControlNet + UNet)
	StageScheduler  = "scheduler"   // the host-side scheduler math within denoise
	StageVAEDecode  = "vae_decode"  // latents to pixels
	StageEncode     = "encode"      // PNG/JPEG encoding (and grid)
	StageTotal      = "total"       // the whole generation
)

// Timings maps a stage name to its wall time in milliseconds.
type Timings map[string]float64

// Add records d under stage, adding to time already recorded there (a
// stage may run in several pieces).
func (t Timings) Add(stage string, d time.Duration) {
	t[stage] += float64(d.Microseconds()) / 1000
}
