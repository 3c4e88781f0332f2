package loadtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
)

func TestLoopbackURL(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080"},
		{in: "http://127.1.2.3:80/base/?q=1#f", want: "http://127.1.2.3:80/base"},
		{in: "http://localhost:9000", want: "http://localhost:9000"},
		{in: "http://LOCALHOST:9000", want: "http://LOCALHOST:9000"},
		{in: "http://[::1]:8080", want: "http://[::1]:8080"},
		{in: "http://10.0.0.1:8080", wantErr: "not a loopback"},
		{in: "http://example.com", wantErr: "not a loopback"},
		{in: "http://localhost.example.com", wantErr: "not a loopback"},
		{in: "http://127.0.0.1.nip.io", wantErr: "not a loopback"},
		{in: "http://0.0.0.0:8080", wantErr: "not a loopback"},
		{in: "http://[::ffff:8.8.8.8]:80", wantErr: "not a loopback"},
		{in: "https://127.0.0.1", wantErr: "want http://"},
		{in: "127.0.0.1:8080", wantErr: "--url"},
		{in: "ftp://127.0.0.1/x", wantErr: "want http://"},
		{in: "http://user:pw@127.0.0.1", wantErr: "credentials"},
		{in: "http://:8080", wantErr: "no host"},
		{in: "http://%zz", wantErr: "--url"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := loopbackURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("loopbackURL(%q) = %v, %v; want an error containing %q", tt.in, u, err, tt.wantErr)
				}
				return
			}
			if err != nil || u.String() != tt.want {
				t.Errorf("loopbackURL(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
			}
		})
	}
}

func TestRequestBody(t *testing.T) {
	tests := []struct {
		name string
		spec RequestSpec
	}{
		{"generated control image", RequestSpec{Prompt: "a cube", Steps: 3, Seed: 7}},
		{"given control image", RequestSpec{Prompt: "a cube", Steps: 3, Seed: 7, ControlImage: mustEdgeMap(t)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := tt.spec.Body()
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got["prompt"] != "a cube" || got["num_inference_steps"] != 3.0 || got["seed"] != 7.0 || len(got) != 4 {
				t.Errorf("body %v", got)
			}
			img, err := base64.StdEncoding.DecodeString(got["control_image"].(string))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := png.Decode(bytes.NewReader(img)); err != nil {
				t.Errorf("control image is not a PNG: %v", err)
			}
		})
	}
}

func mustEdgeMap(t *testing.T) []byte {
	t.Helper()
	img, err := edgeMap(32, 32)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
