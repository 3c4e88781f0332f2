// Package metrics holds the image-quality and control-accuracy measures the
// evaluation (package eval) reports, each written from its published
// definition:
//
//   - PSNR, the peak signal-to-noise ratio of 8-bit images;
//   - SSIM, Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment:
//     from error visibility to structural similarity", IEEE TIP 2004, with
//     their 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, L = 255;
//   - MS-SSIM, Wang, Simoncelli and Bovik, "Multi-scale structural
//     similarity for image quality assessment", Asilomar 2003, with its five
//     scale weights and 2× average-pool downsampling;
//   - edge F1 with a pixel tolerance, the control-accuracy measure
//     ControlNet++ (Li et al., 2024) reports for Canny ControlNets;
//   - the largest and mean absolute difference of two float vectors (latents).
//
// The functions take images as kernels/imageproc holds them (packed 8-bit
// RGB or grey) and refuse inputs of different sizes with an error.
package metrics

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// sameSize checks that two RGB images can be compared pixel for pixel and
// that their buffers match their sizes, so no measure indexes out of range.
func sameSize(a, b *imageproc.RGB) error {
	if a == nil || b == nil {
		return fmt.Errorf("metrics: nil image")
	}
	for _, m := range []*imageproc.RGB{a, b} {
		if m.Width <= 0 || m.Height <= 0 || len(m.Pix) != 3*m.Width*m.Height {
			return fmt.Errorf("metrics: malformed %dx%d RGB image with %d bytes", m.Width, m.Height, len(m.Pix))
		}
	}
	if a.Width != b.Width || a.Height != b.Height {
		return fmt.Errorf("metrics: image sizes differ: %dx%d and %dx%d", a.Width, a.Height, b.Width, b.Height)
	}
	return nil
}

// sameSizeGray is sameSize for grey maps.
func sameSizeGray(a, b *imageproc.Gray) error {
	if a == nil || b == nil {
		return fmt.Errorf("metrics: nil edge map")
	}
	for _, m := range []*imageproc.Gray{a, b} {
		if m.Width <= 0 || m.Height <= 0 || len(m.Pix) != m.Width*m.Height {
			return fmt.Errorf("metrics: malformed %dx%d grey image with %d bytes", m.Width, m.Height, len(m.Pix))
		}
	}
	if a.Width != b.Width || a.Height != b.Height {
		return fmt.Errorf("metrics: edge map sizes differ: %dx%d and %dx%d", a.Width, a.Height, b.Width, b.Height)
	}
	return nil
}
