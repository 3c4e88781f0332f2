package lambda

import (
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
	"github.com/controlfn/controlfn/function/schema"
)

func sqsPayload(t testing.TB, bodies map[string][]byte) []byte {
	t.Helper()
	ev := events.SQSEvent{}
	for _, id := range slices.Sorted(maps.Keys(bodies)) {
		ev.Records = append(ev.Records, events.SQSMessage{
			MessageId: id, Body: string(bodies[id]), EventSource: "aws:sqs",
			EventSourceARN: "arn:aws:sqs:eu-west-1:123456789012:q", ReceiptHandle: "rh",
		})
	}
	return mustJSON(t, ev)
}

func s3Payload(t testing.TB, eventName, bucket string, keys ...string) []byte {
	t.Helper()
	ev := events.S3Event{}
	for _, key := range keys {
		ev.Records = append(ev.Records, events.S3EventRecord{
			EventVersion: "2.1", EventSource: "aws:s3", AWSRegion: "eu-west-1",
			EventTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), EventName: eventName,
			S3: events.S3Entity{
				SchemaVersion: "1.0",
				Bucket:        events.S3Bucket{Name: bucket, Arn: "arn:aws:s3:::" + bucket},
				// S3 sends keys form-encoded.
				Object: events.S3Object{Key: url.QueryEscape(key), Size: 100},
			},
		})
	}
	return mustJSON(t, ev)
}

const (
	msgGood  = "0b9f6c0e-3c0f-4d8e-9c39-000000000001"
	msgBad   = "0b9f6c0e-3c0f-4d8e-9c39-000000000002"
	msgOther = "0b9f6c0e-3c0f-4d8e-9c39-000000000003"
)

func TestSQS(t *testing.T) {
	tests := []struct {
		name       string
		bodies     map[string][]byte
		noOutput   bool
		wantFailed []string
		wantKeys   []string // in the output bucket
	}{
		{
			name: "one bad message",
			bodies: map[string][]byte{
				msgGood:  testRequest(t, nil),
				msgBad:   []byte(`{"prompt": 3`),
				msgOther: testRequest(t, map[string]any{"control_image": map[string]string{"key": "edge.png"}, "num_images": 2}),
			},
			wantFailed: []string{msgBad},
			wantKeys: []string{
				"out/output/" + msgGood + ".json", "out/output/" + msgGood + ".png",
				"out/output/" + msgOther + "-0.png", "out/output/" + msgOther + "-1.png",
				"out/output/" + msgOther + "-grid.png", "out/output/" + msgOther + ".json",
			},
		},
		{
			name: "failures of every kind",
			bodies: map[string][]byte{
				msgGood:  testRequest(t, map[string]any{"prompt": fakegen.PromptPanic}),
				msgBad:   testRequest(t, map[string]any{"width": 1}),
				msgOther: testRequest(t, map[string]any{"control_image": map[string]string{"key": "missing.png"}}),
			},
			wantFailed: []string{msgGood, msgBad, msgOther},
		},
		{
			name:       "no output bucket",
			bodies:     map[string][]byte{msgGood: testRequest(t, nil)},
			noOutput:   true,
			wantFailed: []string{msgGood},
		},
		{
			name:     "S3 notification through SQS",
			bodies:   map[string][]byte{msgGood: s3Payload(t, "ObjectCreated:Put", "in", "input/cat.png")},
			wantKeys: []string{"out/output/cat.json", "out/output/cat.png"},
		},
		{
			name:   "S3 test event",
			bodies: map[string][]byte{msgGood: []byte(`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-02T03:04:05.000Z","Bucket":"in"}`)},
		},
		{
			name:       "unsupported event in a message",
			bodies:     map[string][]byte{msgGood: []byte(`{"Records":[{"eventSource":"aws:sns"}]}`)},
			wantFailed: []string{msgGood},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.InputBucket, cfg.OutputBucket = "in", "out"
			if tt.noOutput {
				cfg.OutputBucket = ""
			}
			env := newTestEnv(t, nil, &cfg)
			env.store.put("in", "edge.png", testPNG(t, 8, 8), nil)
			env.store.put("in", "input/cat.png", testPNG(t, 8, 8), map[string]string{"prompt": "a cat"})
			out, err := env.invoke(t, sqsPayload(t, tt.bodies))
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			var resp events.SQSEventResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatal(err)
			}
			var failed []string
			for _, f := range resp.BatchItemFailures {
				failed = append(failed, f.ItemIdentifier)
			}
			if !slices.Equal(failed, tt.wantFailed) {
				t.Errorf("batchItemFailures %v, want %v; log:\n%s", failed, tt.wantFailed, env.logs)
			}
			if got := env.store.keys("out/"); !slices.Equal(got, tt.wantKeys) {
				t.Errorf("outputs %v, want %v", got, tt.wantKeys)
			}
			if len(tt.wantKeys) > 0 && !strings.Contains(string(out), `"batchItemFailures":[`) {
				t.Errorf("reply %s: batchItemFailures must be a list", out)
			}
		})
	}
}

func TestSQSOutputRecord(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	if _, err := env.invoke(t, sqsPayload(t, map[string][]byte{msgGood: testRequest(t, nil)})); err != nil {
		t.Fatal(err)
	}
	obj, err := env.store.Get(t.Context(), "out", "output/"+msgGood+".json", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		schema.Response
		MessageID string `json:"message_id"`
	}
	if err := json.Unmarshal(obj.Data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.MessageID != msgGood || rec.RequestID != msgGood || rec.Seed != 42 || rec.BuildID != fakegen.BuildID {
		t.Errorf("record %s", obj.Data)
	}
	if len(rec.Images) != 1 || rec.Images[0].Data != nil || rec.Images[0].Key != "output/"+msgGood+".png" || rec.Images[0].Bucket != "out" {
		t.Errorf("images %+v", rec.Images)
	}
	img, err := env.store.Get(t.Context(), "out", rec.Images[0].Key, 1<<20)
	if err != nil || img.ContentType != "image/png" || img.Metadata["seed"] != "42" {
		t.Errorf("image %v, %v", img, err)
	}
}

func TestSQSDeadline(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OutputBucket, cfg.DeadlineMargin = "out", 50*time.Millisecond
	env := newTestEnv(t, fakegen.New(fakegen.Options{SlowStep: time.Second}), &cfg)
	payload := sqsPayload(t, map[string][]byte{
		msgGood: testRequest(t, map[string]any{"prompt": fakegen.PromptSlow}),
		msgBad:  testRequest(t, nil),
	})
	out, err := env.h.Invoke(lambdaContext(t, 400*time.Millisecond), payload)
	if err != nil {
		t.Fatal(err)
	}
	var resp events.SQSEventResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.BatchItemFailures) != 2 {
		t.Errorf("reply %s: want both messages failed, the second not started", out)
	}
	if !strings.Contains(env.logs.String(), "not started") || !strings.Contains(env.logs.String(), `"kind":"timeout"`) {
		t.Errorf("log:\n%s", env.logs)
	}
}

func TestS3(t *testing.T) {
	png := testPNG(t, 8, 8)
	tests := []struct {
		name      string
		objects   map[string][]byte            // key in bucket "in" -> data
		meta      map[string]map[string]string // key -> metadata
		eventName string
		key       string
		cfg       func(*Config)
		putFails  bool
		want      string // S3Result status; "" for a function error
		wantKeys  []string
		wantInErr string // in the .error.json or the reason
	}{
		{
			name:    "sidecar",
			objects: map[string][]byte{"input/cats/a.png": png, "input/cats/a.png.json": []byte(`{"prompt": "a cat", "seed": 5, "num_inference_steps": 3}`)},
			key:     "input/cats/a.png", want: S3Done,
			wantKeys: []string{"in/output/cats/a.json", "in/output/cats/a.png"},
		},
		{
			name:    "metadata",
			objects: map[string][]byte{"input/b.JPG": png},
			meta:    map[string]map[string]string{"input/b.JPG": {"prompt": "a dog", "num-inference-steps": "4", "output_format": "jpeg", "mtime": "17"}},
			key:     "input/b.JPG", want: S3Done,
			wantKeys: []string{"in/output/b.jpg", "in/output/b.json"},
		},
		{
			name:    "key with spaces",
			objects: map[string][]byte{"input/my cat+1.png": png},
			key:     "input/my cat+1.png", want: S3Done,
			wantKeys: []string{"in/output/my cat+1.json", "in/output/my cat+1.png"},
		},
		{
			name:    "output bucket",
			cfg:     func(c *Config) { c.OutputBucket, c.OutputPrefix = "results", "" },
			objects: map[string][]byte{"input/a.png": png},
			key:     "input/a.png", want: S3Done,
			wantKeys: []string{"results/a.json", "results/a.png"},
		},
		{
			name:    "sidecar naming the images",
			objects: map[string][]byte{"input/a.png": png, "input/edge.png": png, "input/a.png.json": []byte(`{"control_image": {"key": "input/edge.png"}}`)},
			key:     "input/a.png", want: S3Done,
			wantKeys: []string{"in/output/a.json", "in/output/a.png"},
		},
		{name: "sidecar object itself", objects: map[string][]byte{"input/a.png.json": []byte(`{}`)}, key: "input/a.png.json", want: S3Ignored},
		{name: "not an image suffix", objects: map[string][]byte{"input/a.gif": png}, key: "input/a.gif", want: S3Ignored},
		{name: "outside the input prefix", objects: map[string][]byte{"elsewhere/a.png": png}, key: "elsewhere/a.png", want: S3Ignored},
		{name: "an output", objects: map[string][]byte{"output/a.png": png}, key: "output/a.png", cfg: func(c *Config) { c.InputPrefix = "" }, want: S3Ignored},
		{name: "removal", objects: map[string][]byte{"input/a.png": png}, eventName: "ObjectRemoved:Delete", key: "input/a.png", want: S3Ignored},
		{name: "deleted since", key: "input/gone.png", want: S3Ignored},
		{
			name:    "bad sidecar field",
			objects: map[string][]byte{"input/a.png": png, "input/a.png.json": []byte(`{"width": 65}`)},
			key:     "input/a.png", want: S3Rejected,
			wantKeys: []string{"in/output/a.error.json"}, wantInErr: `"field": "width"`,
		},
		{
			name:    "sidecar not JSON",
			objects: map[string][]byte{"input/a.png": png, "input/a.png.json": []byte(`prompt: a cat`)},
			key:     "input/a.png", want: S3Rejected,
			wantKeys: []string{"in/output/a.error.json"}, wantInErr: "malformed JSON",
		},
		{
			name:    "bad metadata type",
			objects: map[string][]byte{"input/a.png": png},
			meta:    map[string]map[string]string{"input/a.png": {"seed": "lucky"}},
			key:     "input/a.png", want: S3Rejected,
			wantKeys: []string{"in/output/a.error.json"}, wantInErr: "metadata",
		},
		{
			name:    "corrupt image",
			objects: map[string][]byte{"input/a.png": []byte("\x89PNG\r\n\x1a\nnot really")},
			key:     "input/a.png", want: S3Rejected,
			wantKeys: []string{"in/output/a.error.json"}, wantInErr: "control_image",
		},
		{
			name:    "generator failure",
			objects: map[string][]byte{"input/a.png": png},
			meta:    map[string]map[string]string{"input/a.png": {"prompt": fakegen.PromptFail}},
			key:     "input/a.png", want: "", wantInErr: "internal",
		},
		{
			name:    "output not writable",
			objects: map[string][]byte{"input/a.png": png},
			key:     "input/a.png", putFails: true, want: "", wantInErr: "internal",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			env := newTestEnv(t, nil, &cfg)
			for k, data := range tt.objects {
				env.store.put("in", k, data, tt.meta[k])
			}
			if tt.putFails {
				env.store.failPut = errors.New("access denied")
			}
			name := tt.eventName
			if name == "" {
				name = "ObjectCreated:Put"
			}
			out, err := env.invoke(t, s3Payload(t, name, "in", tt.key))
			if tt.want == "" {
				if got := errorType(err); got != "RecordsFailed" || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Fatalf("error %v, want RecordsFailed with %q", err, tt.wantInErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			var sum S3Summary
			if err := json.Unmarshal(out, &sum); err != nil {
				t.Fatal(err)
			}
			if len(sum.Records) != 1 || sum.Records[0].Status != tt.want || sum.Records[0].Key != tt.key {
				t.Fatalf("reply %s, want status %q", out, tt.want)
			}
			var written []string
			for _, k := range env.store.keys("") {
				if _, ok := tt.objects[strings.TrimPrefix(k, "in/")]; !ok {
					written = append(written, k)
				}
			}
			if !slices.Equal(written, tt.wantKeys) {
				t.Errorf("written %v, want %v", written, tt.wantKeys)
			}
			if tt.wantInErr != "" {
				obj, err := env.store.Get(t.Context(), "in", strings.TrimPrefix(tt.wantKeys[0], "in/"), 1<<20)
				if err != nil || !strings.Contains(string(obj.Data), tt.wantInErr) {
					t.Errorf("error record %s, want %q (%v)", obj.Data, tt.wantInErr, err)
				}
			}
		})
	}
}

func TestS3OutputRecord(t *testing.T) {
	env := newTestEnv(t, nil, nil)
	env.store.put("in", "input/a.png", testPNG(t, 8, 8), nil)
	env.store.put("in", "input/a.png.json", []byte(`{"prompt": "a cat", "seed": 9}`), nil)
	if _, err := env.invoke(t, s3Payload(t, "ObjectCreated:Put", "in", "input/a.png")); err != nil {
		t.Fatal(err)
	}
	obj, err := env.store.Get(t.Context(), "out", "output/a.json", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var rec OutputRecord
	if err := json.Unmarshal(obj.Data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Source == nil || *rec.Source != (ObjectRef{"in", "input/a.png"}) || rec.Seed != 9 || rec.Images[0].Key != "output/a.png" || rec.Images[0].Data != nil {
		t.Errorf("record %s", obj.Data)
	}
}

func TestMetadataRequest(t *testing.T) {
	info := fakegen.New(fakegen.Options{}).Info()
	img := testPNG(t, 8, 8)
	tests := []struct {
		name      string
		meta      map[string]string
		check     func(schema.Request) bool
		wantField string
	}{
		{"empty", nil, func(r schema.Request) bool { return r.Prompt == "" && r.Steps == schema.DefaultSteps }, ""},
		{"fields", map[string]string{"prompt": "a red fox", "negative-prompt": "blurry", "num_inference_steps": "7", "guidance-scale": "3.5", "guess-mode": "true", "control-type": "canny", "seed": "11"},
			func(r schema.Request) bool {
				return r.Prompt == "a red fox" && r.NegativePrompt == "blurry" && r.Steps == 7 && r.GuidanceScale == 3.5 &&
					r.GuessMode && r.ControlType[0] == "canny" && *r.Seed == 11
			}, ""},
		{"string field that looks like JSON", map[string]string{"prompt": "42"}, func(r schema.Request) bool { return r.Prompt == "42" }, ""},
		{"encoded words", map[string]string{"prompt": "=?UTF-8?B?w6ljbGFpcg==?="}, func(r schema.Request) bool { return r.Prompt == "éclair" }, ""},
		{"list", map[string]string{"controlnet-conditioning-scale": "[0.5]"}, func(r schema.Request) bool { return r.ConditioningScale[0] == 0.5 }, ""},
		{"other tools' keys", map[string]string{"mtime": "1700000000", "Content-Md5": "x"}, func(r schema.Request) bool { return true }, ""},
		{"wrong type", map[string]string{"width": "wide"}, nil, "width"},
		{"out of range", map[string]string{"num-images": "9"}, nil, "num_images"},
		{"set twice", map[string]string{"num-images": "1", "num_images": "1"}, nil, "num_images"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := metadataRequest(tt.meta, img, info)
			var req schema.Request
			if err == nil {
				req, err = schema.Decode(body, info)
			}
			if tt.wantField != "" {
				var fe *schema.FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("error %v, want one naming %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(req.ControlImages) != 1 || !tt.check(req) {
				t.Errorf("request %+v", req)
			}
		})
	}
}

func TestWithImage(t *testing.T) {
	info := fakegen.New(fakegen.Options{}).Info()
	img := testPNG(t, 8, 8)
	tests := []struct {
		name, sidecar string
		wantErr       bool
	}{
		{"empty object", `{}`, false},
		{"spaced empty object", " { } ", false},
		{"fields", `{"prompt": "x", "seed": 1}`, false},
		{"own image", `{"control_image": {"key": "k.png"}}`, false},
		{"duplicate", `{"prompt": "x", "prompt": "y"}`, true},
		{"array", `[1]`, true},
		{"null", `null`, true},
		{"malformed", `{"prompt": `, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := withImage([]byte(tt.sidecar), img, info)
			if err == nil {
				_, err = schema.Decode(body, info)
				if err != nil && strings.Contains(tt.sidecar, `"key"`) {
					t.Fatalf("decode %s: %v", body, err)
				}
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
