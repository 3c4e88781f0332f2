package lambda

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
	"github.com/controlfn/controlfn/function/schema"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name, payload, want string
	}{
		{"request", `{"prompt": "x"}`, eventDirect},
		{"empty object", `{}`, eventDirect},
		{"malformed JSON", `{"prompt": `, eventDirect},
		{"not an object", `[1, 2]`, eventDirect},
		{"lower-case records is a request field", `{"records": []}`, eventDirect},
		{"function URL", `{"requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws", "http": {"method": "GET"}}}`, eventFunctionURL},
		{"API Gateway v2", `{"requestContext": {"domainName": "abc.execute-api.eu-west-1.amazonaws.com", "stage": "prod", "http": {"method": "GET"}}}`, eventAPIGateway},
		{"API Gateway v1", `{"httpMethod": "POST", "requestContext": {"stage": "prod"}}`, eventUnsupported},
		{"requestContext without http", `{"requestContext": {}}`, eventUnsupported},
		{"SQS", `{"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}`, eventSQS},
		{"S3", `{"Records": [{"eventSource": "aws:s3"}]}`, eventS3},
		{"SNS", `{"Records": [{"EventSource": "aws:sns"}]}`, eventUnsupported},
		{"DynamoDB", `{"Records": [{"eventSource": "aws:dynamodb"}]}`, eventUnsupported},
		{"mixed sources", `{"Records": [{"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]}`, eventUnsupported},
		{"no records", `{"Records": []}`, eventUnsupported},
		{"records not a list", `{"Records": {"eventSource": "aws:sqs"}}`, eventUnsupported},
		{"record without source", `{"Records": [{}]}`, eventUnsupported},
		{"EventBridge", `{"source": "aws.s3", "detail-type": "Object Created", "detail": {}}`, eventUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := classify([]byte(tt.payload))
			if got != tt.want {
				t.Fatalf("classify = %q (%s), want %q", got, why, tt.want)
			}
			if (got == eventUnsupported) != (why != "") {
				t.Errorf("reason %q for kind %q", why, got)
			}
		})
	}
}

func TestDirect(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	env.store.put("in", "cats/edge.png", testPNG(t, 8, 8), nil)
	env.store.put("other", "edge.png", testPNG(t, 8, 8), nil)
	env.store.put("in", "not-an-image.png", []byte("hello"), nil)
	tests := []struct {
		name      string
		payload   []byte
		wantField string // for a 400 reply
		wantMsg   string
		wantType  string // for a function error
	}{
		{name: "ok", payload: testRequest(t, nil)},
		{name: "object in the default bucket", payload: testRequest(t, map[string]any{"control_image": map[string]string{"key": "cats/edge.png"}})},
		{name: "object in another bucket", payload: testRequest(t, map[string]any{"control_image": map[string]string{"bucket": "other", "key": "edge.png"}})},
		{name: "missing object", payload: testRequest(t, map[string]any{"control_image": map[string]string{"key": "nope.png"}}), wantField: "control_image", wantMsg: "not found"},
		{name: "object not an image", payload: testRequest(t, map[string]any{"control_image": map[string]string{"key": "not-an-image.png"}}), wantField: "control_image", wantMsg: "not a PNG"},
		{name: "malformed JSON", payload: []byte(`{"prompt": "x",`), wantMsg: "malformed JSON"},
		{name: "not an object", payload: []byte(`"hello"`), wantMsg: "must be a JSON object"},
		{name: "empty", payload: []byte(``), wantMsg: "empty"},
		{name: "wrong type", payload: testRequest(t, map[string]any{"width": "64"}), wantField: "width", wantMsg: "integer"},
		{name: "unknown field", payload: testRequest(t, map[string]any{"colour": "red"}), wantField: "colour", wantMsg: "unknown"},
		{name: "out of range", payload: testRequest(t, map[string]any{"num_inference_steps": 1000}), wantField: "num_inference_steps"},
		{name: "missing image", payload: testRequest(t, map[string]any{"control_image": nil}), wantField: "control_image", wantMsg: "required"},
		{name: "corrupt image body", payload: testRequest(t, map[string]any{"control_image": "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAAA=="}), wantField: "control_images[0]", wantMsg: "corrupt"},
		{name: "generator failure", payload: testRequest(t, map[string]any{"prompt": fakegen.PromptFail}), wantType: "InternalError"},
		{name: "generator panic", payload: testRequest(t, map[string]any{"prompt": fakegen.PromptPanic}), wantType: "InternalError"},
		{name: "ok after a panic", payload: testRequest(t, map[string]any{"seed": 7})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := env.invoke(t, tt.payload)
			if tt.wantType != "" {
				if got := errorType(err); got != tt.wantType {
					t.Fatalf("error type %q (%v), want %q", got, err, tt.wantType)
				}
				if strings.Contains(err.Error(), "goroutine") {
					t.Errorf("function error leaks a stack trace: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if tt.wantField == "" && tt.wantMsg == "" {
				var resp DirectResponse
				if err := json.Unmarshal(out, &resp); err != nil || resp.Response == nil {
					t.Fatalf("reply %s: %v", out, err)
				}
				if len(resp.Images) != 1 || len(resp.Images[0].Data) == 0 || resp.BuildID != fakegen.BuildID {
					t.Errorf("reply %s", out)
				}
				if _, err := uuid.Parse(resp.RequestID); err != nil {
					t.Errorf("request id %q: %v", resp.RequestID, err)
				}
				return
			}
			var resp ErrorResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatalf("reply %s: %v", out, err)
			}
			if resp.Status != 400 || resp.Error.Field != tt.wantField || !strings.Contains(resp.Error.Message, tt.wantMsg) || resp.Error.RequestID == "" {
				t.Errorf("reply %s, want status 400, field %q, message with %q", out, tt.wantField, tt.wantMsg)
			}
		})
	}
	logs := env.logs.String()
	if strings.Contains(logs, "a cat") {
		t.Errorf("the log holds prompt text:\n%s", logs)
	}
	if n := strings.Count(logs, `"msg":"invocation"`); n != len(tests) {
		t.Errorf("%d invocation log lines for %d invocations", n, len(tests))
	}
}

func TestDirectSeedAndDefaults(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	out, err := env.invoke(t, testRequest(t, map[string]any{"seed": nil, "num_images": 2, "output_format": "jpeg"}))
	if err != nil {
		t.Fatal(err)
	}
	var resp DirectResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Seed == 0 || resp.Seed > schema.MaxRandomSeed {
		t.Errorf("drawn seed %d", resp.Seed)
	}
	if len(resp.Images) != 2 || resp.Grid == nil || resp.Images[0].MIME != "image/jpeg" {
		t.Errorf("images %d, grid %v, mime %q", len(resp.Images), resp.Grid != nil, resp.Images[0].MIME)
	}
	if _, ok := resp.TimingsMS[schema.StageDecode]; !ok {
		t.Errorf("timings %v lack decode", resp.TimingsMS)
	}
}

func TestColdStart(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	for i, wantCold := range []bool{true, false, false} {
		out, err := env.invoke(t, testRequest(t, nil))
		if err != nil {
			t.Fatal(err)
		}
		var resp DirectResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Cold != wantCold {
			t.Errorf("invocation %d: cold %v, want %v", i, resp.Cold, wantCold)
		}
		if wantCold && (resp.InitMS == nil || *resp.InitMS != 1234) {
			t.Errorf("invocation %d: init_ms %v, want 1234", i, resp.InitMS)
		}
		if !wantCold && resp.InitMS != nil {
			t.Errorf("invocation %d: warm invocation reports init_ms %v", i, *resp.InitMS)
		}
	}
	lines := strings.Split(strings.TrimSpace(env.logs.String()), "\n")
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["cold"] != true || first["init_ms"] != 1234.0 || first["status"] != "ok" || first["aws_request_id"] == "" {
		t.Errorf("first log line %s", lines[0])
	}
	if !strings.Contains(lines[1], `"cold":false`) || strings.Contains(lines[1], "init_ms") {
		t.Errorf("second log line %s", lines[1])
	}
}

func TestDeadline(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DeadlineMargin = 50 * time.Millisecond
	env := newTestEnv(t, fakegen.New(fakegen.Options{SlowStep: time.Second}), &cfg)
	ctx := lambdaContext(t, 500*time.Millisecond)
	start := time.Now()
	_, err := env.h.Invoke(ctx, testRequest(t, map[string]any{"prompt": fakegen.PromptSlow}))
	took := time.Since(start)
	if got := errorType(err); got != "GenerationTimeout" {
		t.Fatalf("error %v, want a GenerationTimeout", err)
	}
	if !strings.Contains(err.Error(), "did not finish within") {
		t.Errorf("message %q", err)
	}
	if took > 480*time.Millisecond {
		t.Errorf("the timeout came after %s, past the deadline less the margin", took)
	}
	if ctx.Err() != nil {
		t.Errorf("the reply came after the Lambda deadline")
	}
	// The process stays healthy: the next request runs.
	if _, err := env.invoke(t, testRequest(t, nil)); err != nil {
		t.Errorf("after a timeout: %v", err)
	}

	// Through a Function URL, a 504 that names the invocation's budget.
	ctx = lambdaContext(t, 500*time.Millisecond)
	out, err := env.h.Invoke(ctx, httpEventPayload(t, "POST", "/v1/generate", "", nil, testRequest(t, map[string]any{"prompt": fakegen.PromptSlow}), false))
	if err != nil {
		t.Fatal(err)
	}
	var resp events.LambdaFunctionURLResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 504 || !strings.Contains(resp.Body, "invocation's") || ctx.Err() != nil {
		t.Errorf("reply %d %s (context %v)", resp.StatusCode, resp.Body, ctx.Err())
	}
}

func TestMarginIsAtMostAQuarter(t *testing.T) {
	env := newTestEnv(t, nil, nil) // 2 s margin
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	inv := env.h.begin(lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{}))
	if inv.budget < 700*time.Millisecond || inv.budget > time.Second {
		t.Errorf("budget %s of a 1s invocation with a 2s margin, want 3/4 of it", inv.budget)
	}
	if inv := env.h.begin(context.Background()); inv.hasDeadline {
		t.Errorf("deadline without one in the context")
	}
}

func TestResolveObjectsKeepsTheCallersRequest(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	env.store.put("in", "a.png", testPNG(t, 8, 8), nil)
	seed := uint64(3)
	req := schema.Defaults(env.h.gen.Info())
	req.Seed = &seed
	req.ControlImages = []schema.ControlImage{{Key: "a.png"}}
	got, err := env.h.resolveObjects(context.Background(), req, "in")
	if err != nil {
		t.Fatal(err)
	}
	if !req.ControlImages[0].IsObject() {
		t.Errorf("the caller's request was modified")
	}
	if c := got.ControlImages[0]; c.Format != schema.FormatPNG || c.Width != 8 || got.Seed == nil || *got.Seed != 3 {
		t.Errorf("resolved %+v, seed %v", c, got.Seed)
	}
	req.ControlImages = []schema.ControlImage{{Key: "a.png"}}
	_, err = env.h.resolveObjects(context.Background(), req, "")
	if fe, ok := err.(*schema.FieldError); !ok || fe.Field != "control_image.bucket" {
		t.Errorf("no default bucket: %v", err)
	}
}

func TestWithoutStore(t *testing.T) {
	h := NewHandler(fakegen.New(fakegen.Options{}), Options{Logger: discardLogger()})
	_, err := h.Invoke(lambdaContext(t, 5*time.Second), testRequest(t, map[string]any{"control_image": map[string]string{"bucket": "b", "key": "k.png"}}))
	if got := errorType(err); got != "InternalError" {
		t.Errorf("object reference without a store: %v, want an InternalError", err)
	}
}
