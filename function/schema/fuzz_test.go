package schema

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode checks, for any body and ControlNet count: no panic, every
// error a *FieldError with a message, and every accepted request surviving
// a JSON round trip unchanged (the wire form Request documents).
func FuzzDecode(f *testing.F) {
	png8 := b64(encodePNG(f, 8, 8))
	for _, s := range []string{
		`{}`,
		`{"control_image": "` + png8 + `", "prompt": "a cat", "seed": 42, "width": 768}`,
		`{"control_images": [{"key": "k", "bucket": "b"}], "control_type": ["canny"], "controlnet_conditioning_scale": [0.5]}`,
		`{"control_image": "data:image/png;base64,` + png8 + `", "guidance_scale": 1e999}`,
		`{"prompt": "a", "prompt": "b"}`,
		`{"num_inference_steps": 1e2, "seed": -0, "clip_skip": null}`,
	} {
		for n := range uint8(3) {
			f.Add([]byte(s), n)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, controlNets uint8) {
		info := testInfo
		info.ControlNets = int(controlNets % 3)
		req, err := Decode(data, info)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Msg == "" {
				t.Fatalf("error %#v is not a *FieldError with a message", err)
			}
			return
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshal %+v: %v", req, err)
		}
		req2, err := Decode(again, info)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
		if !reflect.DeepEqual(req, req2) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", req, req2)
		}
	})
}
