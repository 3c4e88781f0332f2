package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestInvokeClassifies(t *testing.T) {
	ok := `{"request_id":"r","images":[{"mime":"image/png","data":"iVBORw=="}],"timings_ms":{"total":12.5}}`
	tests := []struct {
		name     string
		target   string
		status   int
		body     string
		wantKind string
		wantMsg  string
		wantCold *bool
	}{
		{"http ok", TargetHTTP, 200, ok, "", "", nil},
		{"http busy", TargetHTTP, 429, `{"error":{"message":"a generation is already running"}}`, KindBusy, "a generation is already running", nil},
		{"http bad request", TargetHTTP, 400, `{"error":{"field":"seed","message":"seed: too big"}}`, "http_400", "seed: too big", nil},
		{"http not json", TargetHTTP, 502, `bad gateway`, "http_502", "bad gateway", nil},
		{"http 200 not a response", TargetHTTP, 200, `<html>`, KindBadReply, "", nil},
		{"lambda ok", TargetRIE, 200, ok[:len(ok)-1] + `,"cold":true,"init_ms":300}`, "", "", yes()},
		{"lambda request error", TargetRIE, 200, `{"error":{"message":"bad seed"},"status":400,"cold":false}`, "http_400", "bad seed", new(bool)},
		{"lambda function error", TargetRIE, 200, `{"errorType":"InternalError","errorMessage":"internal error"}`, KindFunction + "InternalError", "internal error", nil},
		{"lambda init failed", TargetRIE, 502, ``, "http_502", "", nil},
		{"lambda empty object", TargetRIE, 200, `{}`, KindBadReply, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
					w.WriteHeader(http.StatusTeapot)
					return
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			l := &launcher{target: tt.target, client: newClient(1)}
			res := l.invoke(context.Background(), &instance{url: srv.URL}, []byte(`{}`))
			if res.kind != tt.wantKind {
				t.Fatalf("kind = %q (%s), want %q", res.kind, res.msg, tt.wantKind)
			}
			if tt.wantMsg != "" && res.msg != tt.wantMsg {
				t.Errorf("message = %q, want %q", res.msg, tt.wantMsg)
			}
			if tt.wantKind == "" && (res.resp == nil || res.resp.TimingsMS["total"] != 12.5) {
				t.Errorf("response = %+v", res.resp)
			}
			if (res.reportedCold == nil) != (tt.wantCold == nil) {
				t.Errorf("reported cold = %v, want %v", res.reportedCold, tt.wantCold)
			}
			if !res.done.After(res.sent) && !res.done.Equal(res.sent) {
				t.Errorf("done %v before sent %v", res.done, res.sent)
			}
		})
	}
}

func TestInvokeTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	url := srv.URL
	l := &launcher{target: TargetHTTP, client: newClient(1)}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if res := l.invoke(ctx, &instance{url: url}, nil); res.kind != KindTimeout {
		t.Errorf("a request past the deadline: kind %q (%s), want %q", res.kind, res.msg, KindTimeout)
	}
	srv.Close()
	if res := l.invoke(context.Background(), &instance{url: url}, nil); res.kind != KindTransport {
		t.Errorf("a request to a closed server: kind %q (%s), want %q", res.kind, res.msg, KindTransport)
	}
}

func TestConfigCheck(t *testing.T) {
	base := func() Config {
		return Config{Target: TargetRIE, Bundle: "b", Bin: "controlfn", RIE: "rie", Modes: []string{ModeCold, ModeWarm},
			Cold: 1, Requests: 1, Concurrency: 1, Timeout: time.Minute}
	}
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"base", func(*Config) {}, true},
		{"bad target", func(c *Config) { c.Target = "grpc" }, false},
		{"bundle and url", func(c *Config) { c.URL = "http://127.0.0.1:1" }, false},
		{"neither", func(c *Config) { c.Bundle = "" }, false},
		{"url warm", func(c *Config) { c.Bundle, c.URL, c.Modes = "", "http://127.0.0.1:1", []string{ModeWarm} }, true},
		{"url cold", func(c *Config) { c.Bundle, c.URL, c.Modes = "", "http://127.0.0.1:1", []string{ModeCold} }, false},
		{"no modes", func(c *Config) { c.Modes = nil }, false},
		{"bad mode", func(c *Config) { c.Modes = []string{"hot"} }, false},
		{"zero cold", func(c *Config) { c.Cold = 0 }, false},
		{"zero concurrency", func(c *Config) { c.Concurrency = 0 }, false},
		{"mixed without pattern", func(c *Config) { c.Modes = []string{ModeMixed}; c.MaxInstances, c.IdleTimeout = 1, time.Second }, false},
		{"mixed", func(c *Config) {
			c.Modes, c.Arrivals, c.MaxInstances, c.IdleTimeout = []string{ModeMixed}, []time.Duration{0}, 1, time.Second
		}, true},
		{"mixed no idle timeout", func(c *Config) {
			c.Modes, c.Arrivals, c.MaxInstances = []string{ModeMixed}, []time.Duration{0}, 1
		}, false},
		{"no rie", func(c *Config) { c.RIE = "" }, false},
		{"http needs no rie", func(c *Config) { c.RIE, c.Target = "", TargetHTTP }, true},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			if err := c.check(); (err == nil) != tt.ok {
				t.Errorf("check() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestRunRefusesRemoteURL(t *testing.T) {
	_, err := Run(context.Background(), Config{Target: TargetHTTP, URL: "http://192.0.2.1:8080", Modes: []string{ModeWarm},
		Requests: 1, Concurrency: 1, Timeout: time.Second})
	if err == nil {
		t.Fatal("Run accepted a non-loopback URL")
	}
}
