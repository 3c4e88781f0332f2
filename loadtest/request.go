package loadtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/url"
	"strings"
)

// RequestSpec is what every request of a run asks for. The same body is
// sent each time: the load test measures the function, not the prompt.
type RequestSpec struct {
	Prompt string
	// Steps is num_inference_steps; few steps keep a run short.
	Steps int
	// Seed fixes the noise so every request does the same work.
	Seed uint64
	// ControlImage is a PNG or JPEG; nil sends a generated edge map.
	ControlImage []byte
}

// wireRequest is the JSON body, with the field names of the schema.
type wireRequest struct {
	Prompt            string `json:"prompt"`
	ControlImage      string `json:"control_image"`
	NumInferenceSteps int    `json:"num_inference_steps"`
	Seed              uint64 `json:"seed"`
}

// Body returns the request's JSON body.
func (s RequestSpec) Body() ([]byte, error) {
	img := s.ControlImage
	if img == nil {
		var err error
		if img, err = edgeMap(64, 64); err != nil {
			return nil, err
		}
	}
	body, err := json.Marshal(wireRequest{
		Prompt:            s.Prompt,
		ControlImage:      base64.StdEncoding.EncodeToString(img),
		NumInferenceSteps: s.Steps,
		Seed:              s.Seed,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the request: %w", err)
	}
	return body, nil
}

// edgeMap draws a white square outline on black: a control map that needs
// no preprocessing, so a run needs no image file. The pipeline resizes it
// to the bundle's size.
func edgeMap(w, h int) ([]byte, error) {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := h / 4; y < 3*h/4; y++ {
		for x := w / 4; x < 3*w/4; x++ {
			if y == h/4 || y == 3*h/4-1 || x == w/4 || x == 3*w/4-1 {
				img.SetGray(x, y, color.Gray{Y: 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encoding the control image: %w", err)
	}
	return buf.Bytes(), nil
}

// loopbackURL parses a target URL and refuses anything that would leave
// the machine: the load test generates traffic on purpose, and pointed at
// someone else's server it is an attack. The host must be a loopback IP
// literal or "localhost"; names are not resolved, so DNS cannot redirect
// the traffic.
func loopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("--url %q: want http:// (the target is a local process)", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("--url %q: credentials are not accepted", raw)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("--url %q: no host", raw)
	}
	if !strings.EqualFold(host, "localhost") {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("--url %q: host %s is not a loopback address (127.0.0.0/8, ::1 or localhost); the load test only drives local processes", raw, host)
		}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}
