package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// FieldError is a request the decoder refused, with the JSON name of the
// field at fault so that the caller can answer 400 naming it.
type FieldError struct {
	// Field is the JSON key ("width"), with an index for list elements
	// ("control_images[1]"); empty when the body as a whole is at fault
	// (not JSON, not an object, trailing data).
	Field string
	// Msg says what is wrong and what would be accepted.
	Msg string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "invalid request: " + e.Msg
	}
	return "invalid request: " + e.Field + ": " + e.Msg
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// requestFields are the keys of a request body, in the order Decode
// checks them.
var requestFields = []string{
	"prompt", "negative_prompt",
	"control_image", "control_images", "control_type", "canny_low", "canny_high",
	"controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
	"guess_mode", "width", "height", "num_inference_steps", "guidance_scale",
	"scheduler", "seed", "num_images", "output_format", "clip_skip",
}

// Decode parses a request body and validates it against the bundle that
// will run it. Every error it returns is a *FieldError. The package
// documentation lists the fields, their defaults and ranges.
func Decode(data []byte, info ModelInfo) (Request, error) {
	fields, err := readObject(data, "", requestFields)
	if err != nil {
		return Request{}, err
	}
	d := decoder{fields: fields, info: info, req: Defaults(info)}
	if err := d.decode(); err != nil {
		return Request{}, err
	}
	return d.req, nil
}

// readObject splits a JSON object into its members, refusing syntax
// errors, unknown and duplicated keys, and trailing data. encoding/json
// alone would silently keep the last duplicate and match keys without
// regard to case. Errors name parent when it is set (a nested object),
// else the key.
func readObject(data []byte, parent string, known []string) (map[string]json.RawMessage, error) {
	name := func(key string) string {
		if parent != "" {
			return parent
		}
		return key
	}
	what := "request body"
	if parent != "" {
		what = "value"
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, fieldErr(parent, "empty %s", what)
	}
	if err != nil {
		return nil, syntaxErr(parent, err)
	}
	if tok != json.Delim('{') {
		return nil, fieldErr(parent, "%s must be a JSON object", what)
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(parent, err)
		}
		key, _ := tok.(string) // the decoder only yields strings as keys
		if !slices.Contains(known, key) {
			if parent != "" {
				return nil, fieldErr(parent, "unknown key %q (want %s)", key, strings.Join(known, ", "))
			}
			return nil, fieldErr(key, "unknown field")
		}
		if _, dup := fields[key]; dup {
			if parent != "" {
				return nil, fieldErr(parent, "duplicated key %q", key)
			}
			return nil, fieldErr(key, "duplicated field")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxErr(name(key), err)
		}
		fields[key] = bytes.TrimSpace(raw)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, syntaxErr(parent, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fieldErr(parent, "data after the JSON object")
	}
	return fields, nil
}

func syntaxErr(field string, err error) *FieldError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fieldErr(field, "malformed JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
		return fieldErr(field, "malformed JSON: unexpected end of input")
	}
	return fieldErr(field, "malformed JSON: %v", err)
}

// decoder fills req, which starts as Defaults, from the members of the
// body.
type decoder struct {
	fields map[string]json.RawMessage
	info   ModelInfo
	req    Request
}

// get returns the member name, ok false when it is absent or null.
func (d *decoder) get(name string) (value, bool) {
	raw, ok := d.fields[name]
	if !ok || string(raw) == "null" {
		return value{}, false
	}
	return value{field: name, raw: raw}, true
}

func (d *decoder) decode() error {
	steps := []func() error{
		// Cheap checks first: a bad number is reported without decoding
		// megabytes of base64.
		d.prompts, d.size, d.sampling, d.output, d.controlOptions, d.controlImages,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) prompts() error {
	for _, f := range []struct {
		name string
		dst  *string
	}{{"prompt", &d.req.Prompt}, {"negative_prompt", &d.req.NegativePrompt}} {
		if v, ok := d.get(f.name); ok {
			s, err := v.string(MaxPromptBytes)
			if err != nil {
				return err
			}
			*f.dst = s
		}
	}
	return nil
}

func (d *decoder) controlImages() error {
	n := d.info.ControlNets
	one, hasOne := d.get("control_image")
	list, hasList := d.get("control_images")
	budget := MaxImageBytes
	switch {
	case hasOne && hasList:
		return fieldErr("control_images", "send control_image or control_images, not both")
	case hasOne:
		switch {
		case n == 0:
			return fieldErr("control_image", "%s", controlNetCount(n))
		case n > 1:
			return fieldErr("control_image", "%s: send control_images, one image each", controlNetCount(n))
		}
		img, err := one.image(&budget)
		if err != nil {
			return err
		}
		d.req.ControlImages = []ControlImage{img}
	case hasList:
		elems, err := list.list(n, controlNetCount(n))
		if err != nil {
			return err
		}
		if len(elems) != n {
			return fieldErr("control_images", "has %d images, %s", len(elems), controlNetCount(n))
		}
		if n == 0 {
			return nil // an empty list for a bundle without ControlNets
		}
		d.req.ControlImages = make([]ControlImage, n)
		for i, e := range elems {
			if d.req.ControlImages[i], err = e.image(&budget); err != nil {
				return err
			}
		}
	case n == 1:
		return fieldErr("control_image", "required: the bundle's ControlNet needs a control image")
	case n > 1:
		return fieldErr("control_images", "required: %s, each needs a control image", controlNetCount(n))
	}
	return nil
}

func controlNetCount(n int) string {
	switch n {
	case 0:
		return "the bundle has no ControlNet"
	case 1:
		return "the bundle has 1 ControlNet"
	}
	return fmt.Sprintf("the bundle has %d ControlNets", n)
}

func (d *decoder) controlOptions() error {
	var err error
	if d.req.ControlType, err = perControlNet(d, "control_type", DefaultControlType, func(v value) (string, error) {
		return v.enum(ControlCanny, ControlNone)
	}); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"canny_low", &d.req.CannyLow}, {"canny_high", &d.req.CannyHigh}} {
		if v, ok := d.get(f.name); ok {
			if *f.dst, err = v.int(MinCanny, MaxCanny); err != nil {
				return err
			}
		}
	}
	if d.req.CannyLow > d.req.CannyHigh {
		return fieldErr("canny_low", "must not exceed canny_high (%d), got %d", d.req.CannyHigh, d.req.CannyLow)
	}
	if d.req.ConditioningScale, err = perControlNet(d, "controlnet_conditioning_scale", DefaultCondScale, func(v value) (float64, error) {
		return v.float(MinCondScale, MaxCondScale)
	}); err != nil {
		return err
	}
	unit := func(v value) (float64, error) { return v.float(0, 1) }
	if d.req.GuidanceStart, err = perControlNet(d, "control_guidance_start", DefaultGuidanceStart, unit); err != nil {
		return err
	}
	if d.req.GuidanceEnd, err = perControlNet(d, "control_guidance_end", DefaultGuidanceEnd, unit); err != nil {
		return err
	}
	for i, end := range d.req.GuidanceEnd {
		if start := d.req.GuidanceStart[i]; end <= start {
			return fieldErr("control_guidance_end", "must be above control_guidance_start for every ControlNet; ControlNet %d has start %g, end %g", i, start, end)
		}
	}
	if v, ok := d.get("guess_mode"); ok {
		if d.req.GuessMode, err = v.bool(); err != nil {
			return err
		}
	}
	return nil
}

// perControlNet reads a field that takes one value for all ControlNets or
// a list with one per ControlNet, and returns the list form.
func perControlNet[T any](d *decoder, name string, def T, parse func(value) (T, error)) ([]T, error) {
	n := d.info.ControlNets
	v, ok := d.get(name)
	if !ok {
		return repeat(def, n), nil
	}
	if v.raw[0] != '[' {
		if n == 0 {
			return nil, fieldErr(name, "%s", controlNetCount(n))
		}
		x, err := parse(v)
		if err != nil {
			return nil, err
		}
		return repeat(x, n), nil
	}
	elems, err := v.list(n, controlNetCount(n)+": send one value or one per ControlNet")
	if err != nil {
		return nil, err
	}
	if len(elems) != n {
		return nil, fieldErr(name, "has %d values, %s: send one value or one per ControlNet", len(elems), controlNetCount(n))
	}
	out := repeat(def, n)
	for i, e := range elems {
		if out[i], err = parse(e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (d *decoder) size() error {
	w, wSet, err := d.side("width")
	if err != nil {
		return err
	}
	h, hSet, err := d.side("height")
	if err != nil {
		return err
	}
	buckets := d.info.Buckets
	if len(buckets) == 0 {
		if wSet {
			d.req.Width = w
		}
		if hSet {
			d.req.Height = h
		}
		return nil
	}
	// A missing side comes from the first bucket with the side sent.
	switch {
	case wSet && !hSet:
		i := slices.IndexFunc(buckets, func(b Size) bool { return b.Width == w })
		if i < 0 {
			return fieldErr("width", "no size of the bundle has width %d; sizes: %s", w, sizeList(buckets))
		}
		h = buckets[i].Height
	case hSet && !wSet:
		i := slices.IndexFunc(buckets, func(b Size) bool { return b.Height == h })
		if i < 0 {
			return fieldErr("height", "no size of the bundle has height %d; sizes: %s", h, sizeList(buckets))
		}
		w = buckets[i].Width
	case !wSet && !hSet:
		return nil // Defaults set the first bucket
	}
	if !slices.Contains(buckets, Size{w, h}) {
		if !slices.ContainsFunc(buckets, func(b Size) bool { return b.Width == w }) {
			return fieldErr("width", "no size of the bundle has width %d; sizes: %s", w, sizeList(buckets))
		}
		return fieldErr("height", "%dx%d is not a size of the bundle; sizes: %s", w, h, sizeList(buckets))
	}
	d.req.Width, d.req.Height = w, h
	return nil
}

// side reads width or height: a positive multiple of 8, within
// MinSide..MaxSide when the bundle lists no buckets.
func (d *decoder) side(name string) (int, bool, error) {
	v, ok := d.get(name)
	if !ok {
		return 0, false, nil
	}
	lo, hi := 8, 1<<16
	if len(d.info.Buckets) == 0 {
		lo, hi = MinSide, MaxSide
	}
	x, err := v.int(lo, hi)
	if err != nil {
		return 0, false, err
	}
	if x%8 != 0 {
		return 0, false, fieldErr(name, "must be a multiple of 8, got %d", x)
	}
	return x, true, nil
}

func sizeList(sizes []Size) string {
	s := make([]string, len(sizes))
	for i, b := range sizes {
		s[i] = fmt.Sprintf("%dx%d", b.Width, b.Height)
	}
	return strings.Join(s, ", ")
}

func (d *decoder) sampling() error {
	var err error
	if v, ok := d.get("num_inference_steps"); ok {
		if d.req.Steps, err = v.int(MinSteps, MaxSteps); err != nil {
			return err
		}
	}
	if v, ok := d.get("guidance_scale"); ok {
		if d.req.GuidanceScale, err = v.float(MinGuidance, MaxGuidance); err != nil {
			return err
		}
	}
	if v, ok := d.get("scheduler"); ok {
		if d.req.Scheduler, err = v.enum(d.info.schedulers()...); err != nil {
			return err
		}
	}
	if v, ok := d.get("seed"); ok {
		seed, err := v.uint64()
		if err != nil {
			return err
		}
		d.req.Seed = &seed
	}
	if v, ok := d.get("clip_skip"); ok {
		if d.req.ClipSkip, err = v.int(0, d.info.clipLayers()-1); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) output() error {
	var err error
	if v, ok := d.get("num_images"); ok {
		if d.req.NumImages, err = v.int(1, d.info.maxImages()); err != nil {
			return err
		}
	}
	if v, ok := d.get("output_format"); ok {
		if d.req.OutputFormat, err = v.enum(FormatPNG, FormatJPEG); err != nil {
			return err
		}
	}
	return nil
}
