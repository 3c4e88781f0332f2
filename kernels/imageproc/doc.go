// Package imageproc turns the control image of a request into the tensor a
// ControlNet consumes.
//
// In the serving data flow it sits between request validation and the
// denoising loop:
//
//	request control image (PNG/JPEG bytes)
//	  -> Decode (size checked before any pixel is decoded; PIL convert("RGB") semantics)
//	  -> optional Canny (OpenCV 4.6 cv2.cvtColor RGB2GRAY + cv2.Canny, edges replicated to 3 channels)
//	  -> Resize to the generation size (PIL LANCZOS, only when the size differs)
//	  -> ToTensor: float32 NCHW [1,3,H,W] in [0,1]
//	  -> RepeatInterleave / Tile for the batch and classifier-free guidance
//
// Every step reproduces the reference Python stack (Pillow, OpenCV and
// diffusers' VaeImageProcessor) in integer arithmetic where they use integer
// arithmetic, because the golden tests compare pixels exactly: a control map
// that is off by one grey level changes the ControlNet residuals.
//
// The package is plain Go with no global state. Images are small value types
// (RGB, Gray) with tightly packed pixels; nothing here retains its inputs.
package imageproc
