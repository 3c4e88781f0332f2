package imageproc

import "fmt"

// Options says how to turn request bytes into a control tensor.
type Options struct {
	// Width and Height are the generation size in pixels. The image is
	// resized (Lanczos) to it unless it already has that size.
	Width, Height int
	// MaxPixels bounds both the decoded image and the target size;
	// DefaultMaxPixels when zero or negative.
	MaxPixels int
	// Canny runs edge detection on the decoded image before resizing
	// (control_type "canny"); otherwise the image already is a control map.
	Canny bool
	// CannyLow and CannyHigh are cv2.Canny's two thresholds.
	CannyLow, CannyHigh int
}

// Prepare runs the whole control-image path: decode, optional Canny,
// resize, and conversion to a [1, 3, Height, Width] tensor in [0, 1]. The
// caller repeats it for the batch and classifier-free guidance with
// RepeatInterleave and Tile.
func Prepare(data []byte, opt Options) (Tensor, error) {
	maxPixels := opt.MaxPixels
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if opt.Width <= 0 || opt.Height <= 0 {
		return Tensor{}, fmt.Errorf("imageproc: target size %dx%d: %w", opt.Width, opt.Height, ErrEmptyImage)
	}
	if opt.Width > maxPixels || opt.Height > maxPixels/opt.Width {
		return Tensor{}, fmt.Errorf("imageproc: target size %dx%d over the limit of %d pixels: %w",
			opt.Width, opt.Height, maxPixels, ErrTooLarge)
	}
	img, err := Decode(data, maxPixels)
	if err != nil {
		return Tensor{}, err
	}
	if opt.Canny {
		if img, err = CannyRGB(img, opt.CannyLow, opt.CannyHigh); err != nil {
			return Tensor{}, err
		}
	}
	if img, err = Resize(img, opt.Width, opt.Height, Lanczos); err != nil {
		return Tensor{}, err
	}
	return ToTensor(img)
}

// DefaultSize is diffusers' VaeImageProcessor.get_default_height_width: a
// missing (zero) target dimension takes the image's, and both are rounded
// down to a multiple of factor (the VAE scale factor, 8 for SD).
func DefaultSize(imgWidth, imgHeight, width, height, factor int) (int, int) {
	if width <= 0 {
		width = imgWidth
	}
	if height <= 0 {
		height = imgHeight
	}
	if factor > 0 {
		width -= width % factor
		height -= height % factor
	}
	return width, height
}
