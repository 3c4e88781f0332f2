package server

import (
	"strings"
	"testing"
	"time"
)

var testStart = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestRequestLog(t *testing.T) {
	for _, logPrompts := range []bool{false, true} {
		s := newTestServer(t, &fakeGen{}, Options{LogPrompts: logPrompts})
		ok := s.do(t, "POST", "/v1/generate", goodBody(t, `"seed": 7`))
		bad := s.do(t, "POST", "/v1/generate", goodBody(t, `"num_inference_steps": 0`))
		text := s.logs.String()
		if strings.Contains(text, pngBase64(t)) {
			t.Error("image data in the log")
		}
		if got := strings.Contains(text, "a secret prompt"); got != logPrompts {
			t.Errorf("LogPrompts %v: prompt in the log: %v", logPrompts, got)
		}
		lines := s.logs.lines(t)
		if len(lines) != 2 {
			t.Fatalf("%d log lines, want one per request:\n%s", len(lines), text)
		}
		first, second := lines[0], lines[1]
		timings, _ := first["timings_ms"].(map[string]any)
		if first["msg"] != "request" || first["id"] != ok.header.Get("X-Request-Id") || first["status"] != 200.0 ||
			first["seed"] != 7.0 || first["cold"] != true || timings["denoise"] != 1500.0 || first["duration_ms"] == nil {
			t.Errorf("log line %v", first)
		}
		if second["id"] != bad.err.RequestID || second["status"] != 400.0 ||
			second["field"] != "num_inference_steps" || second["error_kind"] != "bad_request" {
			t.Errorf("log line %v", second)
		}
	}
}
