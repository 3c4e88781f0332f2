// Package pipeline runs one ControlNet-guided Stable Diffusion generation
// from loaded model components, as diffusers' StableDiffusionControlNetPipeline
// does.
//
// In the data flow it is the invocation path of the function:
//
//	Request -> tokenize prompt and negative prompt -> CLIP text encode
//	  -> control image(s): decode, optional Canny, resize, [0, 1] NCHW
//	  -> initial latents (given, or torch-exact noise from the seed) × init_noise_sigma
//	  -> scheduler loop: one fused ControlNet(s)+UNet program per step,
//	     classifier-free guidance, scheduler.step
//	  -> VAE decode -> (x/2 + 0.5).clamp(0, 1) -> uint8 -> PNG/JPEG (+ grid)
//	  -> Result with per-stage timings
//
// A Pipeline owns the warm state of a loaded model: its weights on the
// backend and the programs compiled for each shape bucket (text encoder at
// batch 1 and 2, the fused step with and without classifier-free guidance,
// the VAE decoder). Whoever loads a model (a bundle reader, a diffusers
// folder reader) only fills Components; LoadDiffusers does so from a
// diffusers folder for tests and the demo.
//
// The Request here is the internal one: the function layer validates the
// public JSON schema and fills defaults; Generate still refuses impossible
// values with a *RequestError naming the field.
package pipeline
