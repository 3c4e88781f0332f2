package lambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
	"github.com/controlfn/controlfn/function/schema"
)

// httpEvent builds a Function URL event (or, with a stage, an API Gateway
// HTTP API one).
func httpEventPayload(t testing.TB, method, path, stage string, headers map[string]string, body []byte, b64 bool) []byte {
	t.Helper()
	domain := "abcdefg.lambda-url.eu-west-1.on.aws"
	if stage != "" {
		domain = "abcdefg.execute-api.eu-west-1.amazonaws.com"
	}
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "$default", RawPath: path, Headers: headers,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			DomainName: domain, Stage: stage, RequestID: "req",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: path, Protocol: "HTTP/1.1", SourceIP: "192.0.2.1"},
		},
		IsBase64Encoded: b64,
	}
	if b64 {
		ev.Body = base64.StdEncoding.EncodeToString(body)
	} else {
		ev.Body = string(body)
	}
	return mustJSON(t, ev)
}

func TestHTTP(t *testing.T) {
	jsonCT := map[string]string{"content-type": "application/json"}
	tests := []struct {
		name        string
		payload     func(t testing.TB) []byte
		cfg         func(*Config)
		wantStatus  int
		wantType    string // response Content-Type
		wantBinary  bool
		wantInBody  string
		wantRequest string // X-Request-Id
	}{
		{
			name: "generate JSON",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, nil), false)
			},
			wantStatus: 200, wantType: "application/json", wantInBody: `"build_id":"` + fakegen.BuildID,
		},
		{
			name: "generate PNG",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", map[string]string{"accept": "image/png"}, testRequest(t, nil), false)
			},
			wantStatus: 200, wantType: "image/png", wantBinary: true,
		},
		{
			name: "base64 request body",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, nil), true)
			},
			wantStatus: 200, wantType: "application/json",
		},
		{
			name: "corrupt base64 request body",
			payload: func(t testing.TB) []byte {
				p := httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, nil, true)
				return bytes.Replace(p, []byte(`"isBase64Encoded":true`), []byte(`"body":"%%%","isBase64Encoded":true`), 1)
			},
			wantStatus: 400, wantInBody: "base64",
		},
		{
			name: "API Gateway named stage",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/prod/v1/generate", "prod", jsonCT, testRequest(t, nil), false)
			},
			wantStatus: 200, wantType: "application/json",
		},
		{
			name: "API Gateway default stage",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "GET", "/healthz", "$default", nil, nil, false)
			},
			wantStatus: 200, wantInBody: `"ok"`,
		},
		{
			name: "caller's request id kept",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", map[string]string{"X-Request-Id": "0b9f6c0e-3c0f-4d8e-9c39-1f1e8f3c2b7a"}, []byte("{"), false)
			},
			wantStatus: 400, wantRequest: "0b9f6c0e-3c0f-4d8e-9c39-1f1e8f3c2b7a",
		},
		{
			name: "field error",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, map[string]any{"height": 65}), false)
			},
			wantStatus: 400, wantInBody: `"field":"height"`,
		},
		{
			name: "object keys refused",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, map[string]any{"control_image": map[string]string{"key": "a.png"}}), false)
			},
			wantStatus: 400, wantInBody: "object keys are not accepted",
		},
		{
			name: "object keys allowed",
			cfg:  func(c *Config) { c.URLObjectKeys = true },
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, map[string]any{"control_image": map[string]string{"key": "a.png"}}), false)
			},
			wantStatus: 200,
		},
		{
			name: "generator panic",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "POST", "/v1/generate", "", jsonCT, testRequest(t, map[string]any{"prompt": fakegen.PromptPanic}), false)
			},
			wantStatus: 500, wantInBody: "internal error",
		},
		{
			name: "unknown route",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "GET", "/nope", "", nil, nil, false)
			},
			wantStatus: 404,
		},
		{
			name: "method not HTTP",
			payload: func(t testing.TB) []byte {
				return httpEventPayload(t, "GE T", "/healthz", "", nil, nil, false)
			},
			wantStatus: 400, wantInBody: "malformed HTTP request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.InputBucket = "in"
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			env := newTestEnv(t, nil, &cfg)
			env.store.put("in", "a.png", testPNG(t, 8, 8), nil)
			out, err := env.invoke(t, tt.payload(t))
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			var resp events.LambdaFunctionURLResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatalf("reply %s: %v", out, err)
			}
			body := []byte(resp.Body)
			if resp.IsBase64Encoded {
				if body, err = base64.StdEncoding.DecodeString(resp.Body); err != nil {
					t.Fatal(err)
				}
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %.300s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantType != "" && resp.Headers["Content-Type"] != tt.wantType {
				t.Errorf("Content-Type %q, want %q", resp.Headers["Content-Type"], tt.wantType)
			}
			if resp.IsBase64Encoded != tt.wantBinary {
				t.Errorf("isBase64Encoded %v, want %v", resp.IsBase64Encoded, tt.wantBinary)
			}
			if tt.wantBinary {
				if _, err := png.Decode(bytes.NewReader(body)); err != nil {
					t.Errorf("body is no PNG: %v", err)
				}
			}
			if !strings.Contains(string(body), tt.wantInBody) {
				t.Errorf("body %.300s lacks %q", body, tt.wantInBody)
			}
			if tt.wantRequest != "" && resp.Headers["X-Request-Id"] != tt.wantRequest {
				t.Errorf("X-Request-Id %q, want %q", resp.Headers["X-Request-Id"], tt.wantRequest)
			}
			if resp.Headers[HeaderColdStart] != "true" || resp.Headers[HeaderInitMS] != "1234.000" {
				t.Errorf("first invocation headers %v", resp.Headers)
			}
		})
	}
}

func TestHTTPColdThenWarm(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	for i, wantCold := range []string{"true", "false"} {
		ctx := lambdaContext(t, 5*time.Second)
		out, err := env.h.Invoke(ctx, httpEventPayload(t, "GET", "/healthz", "", nil, nil, false))
		if err != nil {
			t.Fatal(err)
		}
		var resp events.LambdaFunctionURLResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Headers[HeaderColdStart] != wantCold {
			t.Errorf("invocation %d: %s %q, want %q", i, HeaderColdStart, resp.Headers[HeaderColdStart], wantCold)
		}
		if _, ok := resp.Headers[HeaderInitMS]; ok != (i == 0) {
			t.Errorf("invocation %d: %s present: %v", i, HeaderInitMS, ok)
		}
	}
}

func TestHTTPResponseTooLarge(t *testing.T) {
	big := genFunc(func(_ context.Context, req schema.Request) (*schema.Response, error) {
		return &schema.Response{Images: []schema.Image{{MIME: "image/png", Data: make([]byte, 5<<20)}}}, nil
	})
	env := newTestEnv(t, big, nil)
	out, err := env.invoke(t, httpEventPayload(t, "POST", "/v1/generate", "", nil, testRequest(t, nil), false))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > maxResponseBytes {
		t.Fatalf("reply of %d bytes", len(out))
	}
	var resp events.LambdaFunctionURLResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || !strings.Contains(resp.Body, "limit") {
		t.Errorf("reply %d %s", resp.StatusCode, resp.Body)
	}
}

func TestMalformedHTTPEvent(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	for _, payload := range []string{
		`{"requestContext": {"http": {"method": 7}}}`,
		`{"requestContext": {"http": {}}}`,
	} {
		if _, err := env.invoke(t, []byte(payload)); errorType(err) != "MalformedEvent" {
			t.Errorf("%s: %v, want a MalformedEvent", payload, err)
		}
	}
}
