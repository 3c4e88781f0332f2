// Package schema is the wire contract of a generation: the Request a client
// sends (HTTP body, Lambda payload or SQS message body) and the Response it
// gets back. In the data flow it is the first and the last step of an
// invocation: request bytes -> Decode (parse + validate against the loaded
// bundle's ModelInfo) -> pipeline -> Response -> JSON.
//
// It imports only the standard library so that clients (loadtest, tools)
// can build requests and read responses without linking the model code.
//
// # Request fields
//
// Decoding is strict: the body must be one JSON object, keys are matched
// exactly (case-sensitive), and an unknown key, a duplicated key, a value
// of the wrong JSON type, a number that overflows float64 (1e999), a
// non-integer where an integer is due, a value out of range, bad base64 or
// an image that is not PNG/JPEG is refused with a *FieldError naming the
// key. JSON null means "absent": the default applies.
//
//	field                          type                    default               range / rule
//	prompt                         string                  ""                    at most MaxPromptBytes (4096) bytes of UTF-8
//	negative_prompt                string                  ""                    at most MaxPromptBytes bytes of UTF-8
//	control_image                  image (see below)       none                  required when the bundle has one ControlNet
//	control_images                 list of images          none                  one per ControlNet; not with control_image
//	control_type                   string or list          "none"                "canny" | "none", one or one per ControlNet
//	canny_low                      integer                 100                   0-1000, at most canny_high
//	canny_high                     integer                 200                   0-1000
//	controlnet_conditioning_scale  number or list          1.0                   0-5, one or one per ControlNet
//	control_guidance_start         number or list          0.0                   0-1, one or one per ControlNet
//	control_guidance_end           number or list          1.0                   0-1, above the start
//	guess_mode                     boolean                 false
//	width, height                  integer                 bundle's first bucket multiple of 8; the pair is one of the buckets
//	num_inference_steps            integer                 20                    1-150
//	guidance_scale                 number                  7.5                   0-30 (<= 1 disables classifier-free guidance)
//	scheduler                      string                  "unipc"               ddim, pndm, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc (those the bundle offers)
//	seed                           integer                 random in [0, 2^53)   0 to 2^64-1
//	num_images                     integer                 1                     1 to ModelInfo.MaxImages
//	output_format                  string                  "png"                 "png" | "jpeg"
//	clip_skip                      integer                 0                     0 to ModelInfo.ClipLayers-1
//
// Why these defaults: 20 UniPC steps is what diffusers documents for its
// ControlNet pipeline and keeps a cold Lambda invocation short; control_type
// "none" follows diffusers, which never preprocesses the control image, so
// an edge map a client already prepared is not run through Canny twice.
// A random seed is drawn below 2^53 so that any JSON client (JavaScript
// numbers included) can send the reported seed back unchanged.
//
// When only one of width and height is sent, the other comes from the first
// bucket with the side sent. A bundle whose ModelInfo lists no buckets accepts any multiple of
// 8 from MinSide to MaxSide.
//
// # Control images
//
// An image is either a JSON string or a JSON object:
//
//   - a string holds a base64 (standard alphabet, padded) PNG or JPEG,
//     optionally as a data URL ("data:image/png;base64,..."); the decoded
//     bytes of all control images together must fit MaxImageBytes (6 MiB,
//     the Lambda synchronous payload limit), and the image header must
//     declare at most MaxImagePixels pixels. Only the header is read here;
//     the pipeline decodes the pixels and reports a corrupt body as a
//     *FieldError for the same field.
//   - an object {"key": "...", "bucket": "..."} names an object in storage,
//     for event sources (S3, SQS) whose payloads cannot carry the image.
//     The HTTP server refuses it unless configured to fetch objects.
//
// A bundle with one ControlNet takes control_image or a one-element
// control_images; a bundle with several takes control_images with one image
// per ControlNet, in the bundle's order. The per-ControlNet fields
// (control_type, controlnet_conditioning_scale, control_guidance_start,
// control_guidance_end) take one value for all ControlNets or a list with
// one per ControlNet; Decode always returns the list form.
package schema
