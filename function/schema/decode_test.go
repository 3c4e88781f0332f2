package schema

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"reflect"
	"strings"
	"testing"
)

var testInfo = ModelInfo{
	BuildID:     "0b5c3e0a-6f8e-4d6e-9a59-6e6f1f0c2d11",
	Buckets:     []Size{{512, 512}, {768, 512}, {512, 768}},
	MaxImages:   4,
	ControlNets: 1,
}

func encodePNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewRGBA(image.Rect(0, 0, w, h)), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// body builds a request body from a base (a valid request with a control
// image) and members to add, replace, or (value nil) delete.
func body(t testing.TB, members map[string]any) []byte {
	t.Helper()
	m := map[string]any{"control_image": b64(encodePNG(t, 8, 8))}
	for k, v := range members {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// raw is a JSON literal spliced into a body as is.
type raw string

func (r raw) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func TestDecodeDefaults(t *testing.T) {
	img := encodePNG(t, 16, 8)
	req, err := Decode([]byte(`{"control_image": "`+b64(img)+`"}`), testInfo)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults(testInfo)
	want.ControlImages = []ControlImage{{Data: img, Format: FormatPNG, Width: 16, Height: 8}}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("Decode = %+v\nwant %+v", req, want)
	}
	if req.Width != 512 || req.Height != 512 || req.Steps != 20 || req.Scheduler != "unipc" ||
		req.GuidanceScale != 7.5 || req.NumImages != 1 || req.OutputFormat != "png" || req.Seed != nil ||
		req.ControlType[0] != "none" || req.ConditioningScale[0] != 1 || req.GuidanceEnd[0] != 1 {
		t.Errorf("defaults changed: %+v", req)
	}
}

func TestDecodeValid(t *testing.T) {
	jpg := encodeJPEG(t, 24, 16)
	tests := []struct {
		name    string
		members map[string]any
		check   func(t *testing.T, r Request)
	}{
		{"everything", map[string]any{
			"prompt": "a house", "negative_prompt": "blurry", "control_type": "canny",
			"canny_low": 50, "canny_high": 150, "controlnet_conditioning_scale": 0.8,
			"control_guidance_start": 0.1, "control_guidance_end": 0.9, "guess_mode": true,
			"width": 768, "height": 512, "num_inference_steps": 150, "guidance_scale": 0,
			"scheduler": "dpmpp_2m_karras", "seed": raw("18446744073709551615"), "num_images": 4,
			"output_format": "jpeg", "clip_skip": 11,
		}, func(t *testing.T, r Request) {
			if r.Prompt != "a house" || r.NegativePrompt != "blurry" || r.ControlType[0] != "canny" ||
				r.CannyLow != 50 || r.CannyHigh != 150 || r.ConditioningScale[0] != 0.8 ||
				r.GuidanceStart[0] != 0.1 || r.GuidanceEnd[0] != 0.9 || !r.GuessMode ||
				r.Width != 768 || r.Height != 512 || r.Steps != 150 || r.GuidanceScale != 0 ||
				r.Scheduler != "dpmpp_2m_karras" || r.Seed == nil || *r.Seed != 1<<64-1 ||
				r.NumImages != 4 || r.OutputFormat != "jpeg" || r.ClipSkip != 11 {
				t.Errorf("got %+v", r)
			}
		}},
		{"nulls are defaults", map[string]any{"seed": raw("null"), "prompt": raw("null"), "width": raw("null")},
			func(t *testing.T, r Request) {
				if r.Seed != nil || r.Prompt != "" || r.Width != 512 {
					t.Errorf("got %+v", r)
				}
			}},
		{"height from width's bucket", map[string]any{"width": 768}, func(t *testing.T, r Request) {
			if r.Width != 768 || r.Height != 512 {
				t.Errorf("got %dx%d", r.Width, r.Height)
			}
		}},
		{"width from height's bucket", map[string]any{"height": 768}, func(t *testing.T, r Request) {
			if r.Width != 512 || r.Height != 768 {
				t.Errorf("got %dx%d", r.Width, r.Height)
			}
		}},
		{"list forms", map[string]any{"control_image": nil, "control_images": []string{b64(jpg)},
			"control_type": []string{"canny"}, "controlnet_conditioning_scale": []float64{0.5}},
			func(t *testing.T, r Request) {
				if len(r.ControlImages) != 1 || r.ControlImages[0].Format != "jpeg" || r.ControlImages[0].Width != 24 ||
					r.ControlType[0] != "canny" || r.ConditioningScale[0] != 0.5 {
					t.Errorf("got %+v", r)
				}
			}},
		{"data URL", map[string]any{"control_image": "data:image/jpeg;base64," + b64(jpg)}, func(t *testing.T, r Request) {
			if !bytes.Equal(r.ControlImages[0].Data, jpg) {
				t.Error("data URL payload not decoded")
			}
		}},
		{"object key", map[string]any{"control_image": map[string]string{"bucket": "in", "key": "a/b.png"}},
			func(t *testing.T, r Request) {
				if c := r.ControlImages[0]; !c.IsObject() || c.Bucket != "in" || c.Key != "a/b.png" || c.Data != nil {
					t.Errorf("got %+v", c)
				}
			}},
		{"seed zero", map[string]any{"seed": 0}, func(t *testing.T, r Request) {
			if r.Seed == nil || *r.Seed != 0 {
				t.Errorf("seed %v", r.Seed)
			}
		}},
		{"prompt at the limit", map[string]any{"prompt": strings.Repeat("é", MaxPromptBytes/2)}, func(t *testing.T, r Request) {
			if len(r.Prompt) != MaxPromptBytes {
				t.Errorf("prompt %d bytes", len(r.Prompt))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Decode(body(t, tt.members), testInfo)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	png8 := b64(encodePNG(t, 8, 8))
	bomb := encodePNG(t, 8, 8)
	// Rewrite the IHDR size to 100000x100000: a few bytes declaring a
	// gigapixel image.
	copy(bomb[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	binary.BigEndian.PutUint32(bomb[29:33], crc32.ChecksumIEEE(bomb[12:29]))
	tests := []struct {
		name      string
		body      string // used when members is nil
		members   map[string]any
		field     string
		msgSubstr string
	}{
		{name: "empty", body: "", field: "", msgSubstr: "empty"},
		{name: "malformed", body: `{"prompt": "a"`, field: "", msgSubstr: "malformed JSON"},
		{name: "malformed value", body: `{"prompt": tru}`, field: "prompt", msgSubstr: "malformed JSON"},
		{name: "not an object", body: `[1]`, field: "", msgSubstr: "JSON object"},
		{name: "trailing data", body: `{} {}`, field: "", msgSubstr: "after the JSON object"},
		{name: "unknown field", members: map[string]any{"promt": "x"}, field: "promt", msgSubstr: "unknown field"},
		{name: "case matters", members: map[string]any{"Prompt": "x"}, field: "Prompt", msgSubstr: "unknown field"},
		{name: "duplicated", body: `{"prompt": "a", "prompt": "b"}`, field: "prompt", msgSubstr: "duplicated"},
		{name: "prompt type", members: map[string]any{"prompt": 3}, field: "prompt", msgSubstr: "must be a string"},
		{name: "prompt too long", members: map[string]any{"prompt": strings.Repeat("a", MaxPromptBytes+1)}, field: "prompt", msgSubstr: "over the limit"},
		{name: "negative too long", members: map[string]any{"negative_prompt": strings.Repeat("a", 10<<20)}, field: "negative_prompt", msgSubstr: "over the limit"},
		{name: "prompt invalid UTF-8", body: "{\"prompt\": \"\xff\"}", field: "prompt", msgSubstr: "UTF-8"},
		{name: "steps 0", members: map[string]any{"num_inference_steps": 0}, field: "num_inference_steps", msgSubstr: "from 1 to 150"},
		{name: "steps 10000", members: map[string]any{"num_inference_steps": 10000}, field: "num_inference_steps", msgSubstr: "got 10000"},
		{name: "steps fraction", members: map[string]any{"num_inference_steps": 20.5}, field: "num_inference_steps", msgSubstr: "integer"},
		{name: "steps exponent", members: map[string]any{"num_inference_steps": raw("2e1")}, field: "num_inference_steps", msgSubstr: "integer"},
		{name: "steps string", members: map[string]any{"num_inference_steps": "20"}, field: "num_inference_steps", msgSubstr: "got a string"},
		{name: "steps huge", members: map[string]any{"num_inference_steps": raw(strings.Repeat("9", 100))}, field: "num_inference_steps", msgSubstr: "..."},
		{name: "guidance overflow", members: map[string]any{"guidance_scale": raw("1e999")}, field: "guidance_scale", msgSubstr: "out of range"},
		{name: "guidance -overflow", members: map[string]any{"guidance_scale": raw("-1e999")}, field: "guidance_scale", msgSubstr: "out of range"},
		{name: "guidance NaN string", members: map[string]any{"guidance_scale": "NaN"}, field: "guidance_scale", msgSubstr: "must be a number"},
		{name: "guidance Infinity string", members: map[string]any{"guidance_scale": "Infinity"}, field: "guidance_scale", msgSubstr: "must be a number"},
		{name: "guidance above", members: map[string]any{"guidance_scale": 30.5}, field: "guidance_scale", msgSubstr: "from 0 to 30"},
		{name: "guidance bool", members: map[string]any{"guidance_scale": true}, field: "guidance_scale", msgSubstr: "got a boolean"},
		{name: "width not multiple of 8", members: map[string]any{"width": 500}, field: "width", msgSubstr: "multiple of 8"},
		{name: "width not a bucket", members: map[string]any{"width": 1024}, field: "width", msgSubstr: "768x512"},
		{name: "size not a bucket", members: map[string]any{"width": 768, "height": 768}, field: "height", msgSubstr: "768x768"},
		{name: "height negative", members: map[string]any{"height": -512}, field: "height", msgSubstr: "integer from 8"},
		{name: "scheduler unknown", members: map[string]any{"scheduler": "lms"}, field: "scheduler", msgSubstr: "one of ddim"},
		{name: "scheduler case", members: map[string]any{"scheduler": "DDIM"}, field: "scheduler", msgSubstr: "got \"DDIM\""},
		{name: "seed negative", members: map[string]any{"seed": -1}, field: "seed", msgSubstr: "from 0 to 18446744073709551615"},
		{name: "seed overflow", members: map[string]any{"seed": raw("18446744073709551616")}, field: "seed", msgSubstr: "integer"},
		{name: "seed float", members: map[string]any{"seed": 1.5}, field: "seed", msgSubstr: "integer"},
		{name: "seed string", members: map[string]any{"seed": "42"}, field: "seed", msgSubstr: "got a string"},
		{name: "num_images 0", members: map[string]any{"num_images": 0}, field: "num_images", msgSubstr: "from 1 to 4"},
		{name: "num_images 5", members: map[string]any{"num_images": 5}, field: "num_images", msgSubstr: "from 1 to 4"},
		{name: "output format", members: map[string]any{"output_format": "webp"}, field: "output_format", msgSubstr: "png, jpeg"},
		{name: "clip_skip", members: map[string]any{"clip_skip": 12}, field: "clip_skip", msgSubstr: "from 0 to 11"},
		{name: "guess_mode type", members: map[string]any{"guess_mode": "true"}, field: "guess_mode", msgSubstr: "boolean"},
		{name: "control_type", members: map[string]any{"control_type": "depth"}, field: "control_type", msgSubstr: "canny, none"},
		{name: "canny range", members: map[string]any{"canny_high": 1001}, field: "canny_high", msgSubstr: "from 0 to 1000"},
		{name: "canny order", members: map[string]any{"canny_low": 201}, field: "canny_low", msgSubstr: "canny_high"},
		{name: "scale range", members: map[string]any{"controlnet_conditioning_scale": 5.5}, field: "controlnet_conditioning_scale", msgSubstr: "from 0 to 5"},
		{name: "scale list length", members: map[string]any{"controlnet_conditioning_scale": []float64{1, 1}}, field: "controlnet_conditioning_scale", msgSubstr: "too many entries: the bundle has 1 ControlNet"},
		{name: "scale list element", members: map[string]any{"controlnet_conditioning_scale": []any{"x"}}, field: "controlnet_conditioning_scale[0]", msgSubstr: "must be a number"},
		{name: "guidance window", members: map[string]any{"control_guidance_start": 0.5, "control_guidance_end": 0.5}, field: "control_guidance_end", msgSubstr: "above"},
		{name: "guidance end range", members: map[string]any{"control_guidance_end": 1.5}, field: "control_guidance_end", msgSubstr: "from 0 to 1"},
		{name: "no control image", members: map[string]any{"control_image": nil}, field: "control_image", msgSubstr: "required"},
		{name: "both control forms", members: map[string]any{"control_images": []string{png8}}, field: "control_images", msgSubstr: "not both"},
		{name: "control images empty", members: map[string]any{"control_image": nil, "control_images": []string{}}, field: "control_images", msgSubstr: "0 images"},
		{name: "control image number", members: map[string]any{"control_image": 7}, field: "control_image", msgSubstr: "base64"},
		{name: "invalid base64", members: map[string]any{"control_image": "iVBOR$$$"}, field: "control_image", msgSubstr: "invalid base64 at byte 5"},
		{name: "unpadded base64", members: map[string]any{"control_image": strings.TrimRight(b64([]byte("ab")), "=")}, field: "control_image", msgSubstr: "invalid base64"},
		{name: "empty image", members: map[string]any{"control_image": ""}, field: "control_image", msgSubstr: "empty"},
		{name: "not an image", members: map[string]any{"control_image": b64([]byte("GIF89a......"))}, field: "control_image", msgSubstr: "not a PNG or JPEG"},
		{name: "truncated PNG", members: map[string]any{"control_image": b64(encodePNG(t, 8, 8)[:12])}, field: "control_image", msgSubstr: "unreadable png header"},
		{name: "pixel bomb", members: map[string]any{"control_image": b64(bomb)}, field: "control_image", msgSubstr: "over the limit"},
		{name: "image over 6 MiB", members: map[string]any{"control_image": b64(append(encodePNG(t, 8, 8), make([]byte, MaxImageBytes)...))}, field: "control_image", msgSubstr: "bytes in all"},
		{name: "bad data URL", members: map[string]any{"control_image": "data:image/gif;base64," + png8}, field: "control_image", msgSubstr: "media type"},
		{name: "data URL not base64", members: map[string]any{"control_image": "data:image/png," + png8}, field: "control_image", msgSubstr: "malformed data URL"},
		{name: "object without key", members: map[string]any{"control_image": map[string]string{"bucket": "b"}}, field: "control_image.key", msgSubstr: "required"},
		{name: "object unknown key", members: map[string]any{"control_image": map[string]string{"key": "k", "url": "u"}}, field: "control_image", msgSubstr: `unknown key "url"`},
		{name: "object duplicated key", body: `{"control_image": {"key": "a", "key": "b"}}`, field: "control_image", msgSubstr: "duplicated key"},
		{name: "object key type", members: map[string]any{"control_image": map[string]int{"key": 1}}, field: "control_image.key", msgSubstr: "must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.body)
			if tt.members != nil {
				data = body(t, tt.members)
			}
			_, err := Decode(data, testInfo)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Decode error = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msgSubstr) {
				t.Errorf("error %q (field %q), want field %q and a message with %q", fe, fe.Field, tt.field, tt.msgSubstr)
			}
		})
	}
}

func TestDecodeSeveralControlNets(t *testing.T) {
	info := testInfo
	info.ControlNets = 2
	png8, jpg := b64(encodePNG(t, 8, 8)), b64(encodeJPEG(t, 8, 8))
	r, err := Decode(body(t, map[string]any{
		"control_image": nil, "control_images": []any{png8, map[string]string{"key": "k"}},
		"control_type": []string{"canny", "none"}, "controlnet_conditioning_scale": 0.7,
		"control_guidance_start": []float64{0, 0.2},
	}), info)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.ControlImages) != 2 || r.ControlImages[1].Key != "k" ||
		!reflect.DeepEqual(r.ControlType, []string{"canny", "none"}) ||
		!reflect.DeepEqual(r.ConditioningScale, []float64{0.7, 0.7}) ||
		!reflect.DeepEqual(r.GuidanceStart, []float64{0, 0.2}) ||
		!reflect.DeepEqual(r.GuidanceEnd, []float64{1, 1}) {
		t.Errorf("got %+v", r)
	}

	for _, tt := range []struct {
		members map[string]any
		field   string
	}{
		{map[string]any{}, "control_image"}, // one image for two ControlNets
		{map[string]any{"control_image": nil}, "control_images"},
		{map[string]any{"control_image": nil, "control_images": []string{png8}}, "control_images"},
		{map[string]any{"control_image": nil, "control_images": []string{png8, "!"}}, "control_images[1]"},
		{map[string]any{"control_image": nil, "control_images": []string{png8, jpg}, "control_type": []string{"canny"}}, "control_type"},
		{map[string]any{"control_image": nil, "control_images": []string{png8, jpg}, "control_guidance_end": []float64{1, 0}}, "control_guidance_end"},
	} {
		_, err := Decode(body(t, tt.members), info)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%v: error %v, want field %q", tt.members, err, tt.field)
		}
	}
}

func TestDecodeNoControlNet(t *testing.T) {
	info := ModelInfo{ClipLayers: 24, Schedulers: []string{"ddim"}}
	r, err := Decode([]byte(`{"prompt": "p", "width": 64, "height": 2048, "clip_skip": 23}`), info)
	if err != nil {
		t.Fatal(err)
	}
	if r.ControlImages != nil || r.ControlType != nil || r.Scheduler != "ddim" || r.Width != 64 || r.Height != 2048 {
		t.Errorf("got %+v", r)
	}
	for body, field := range map[string]string{
		`{"control_image": "x"}`:                 "control_image",
		`{"controlnet_conditioning_scale": 1}`:   "controlnet_conditioning_scale",
		`{"width": 2056}`:                        "width",
		`{"height": 56}`:                         "height",
		`{"scheduler": "unipc"}`:                 "scheduler",
		`{"num_images": 2}`:                      "num_images",
		`{"control_images": ["x"]}`:              "control_images",
		`{"control_guidance_start": [0.5, 0.5]}`: "control_guidance_start",
	} {
		_, err := Decode([]byte(body), info)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: error %v, want field %q", body, err, field)
		}
	}
}

// TestRoundTrip checks the promise of Request's documentation: a decoded
// request marshals to a body that decodes to the same request.
func TestRoundTrip(t *testing.T) {
	for _, info := range []ModelInfo{testInfo, {ControlNets: 2, MaxImages: 2}, {}} {
		want := Defaults(info)
		seed := uint64(1<<64 - 1)
		want.Seed = &seed
		want.Prompt = "a \"quoted\" <prompt> é"
		for range info.ControlNets {
			want.ControlImages = append(want.ControlImages, ControlImage{Data: encodePNG(t, 8, 16), Format: "png", Width: 8, Height: 16})
		}
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data, info)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %s:\ngot  %+v\nwant %+v", data, got, want)
		}
	}
}

func TestRandomSeed(t *testing.T) {
	for range 1000 {
		if s := RandomSeed(); s > MaxRandomSeed {
			t.Fatalf("seed %d above 2^53-1", s)
		}
	}
}

func ExampleDecode() {
	info := ModelInfo{Buckets: []Size{{512, 512}}, ControlNets: 1}
	_, err := Decode([]byte(`{"control_image": {"key": "in/1.png"}, "num_inference_steps": 0}`), info)
	var fe *FieldError
	if errors.As(err, &fe) {
		fmt.Printf("%s: %s\n", fe.Field, fe.Msg) // the HTTP layer answers 400 naming the field
	}
	// Output: num_inference_steps: must be an integer from 1 to 150, got 0
}
