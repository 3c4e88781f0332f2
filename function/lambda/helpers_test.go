package lambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/server"
)

// memStore is an in-memory ObjectStore.
type memStore struct {
	mu      sync.Mutex
	objects map[string]Object
	failPut error
}

func newMemStore() *memStore { return &memStore{objects: map[string]Object{}} }

func (s *memStore) Get(_ context.Context, bucket, key string, limit int64) (*Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objects[bucket+"/"+key]
	if !ok {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, ErrNotFound)
	}
	if int64(len(obj.Data)) > limit {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, ErrTooLarge)
	}
	return &obj, nil
}

func (s *memStore) Put(_ context.Context, bucket, key string, obj Object) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut != nil {
		return s.failPut
	}
	s.objects[bucket+"/"+key] = obj
	return nil
}

func (s *memStore) put(bucket, key string, data []byte, meta map[string]string) {
	s.objects[bucket+"/"+key] = Object{Data: data, Metadata: meta}
}

// keys lists the stored keys under prefix ("bucket/key"), sorted.
func (s *memStore) keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	img.Set(0, 0, color.White)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testRequest is a valid request body for the fake bundle.
func testRequest(t testing.TB, extra map[string]any) []byte {
	t.Helper()
	body := map[string]any{
		"prompt":              "a cat",
		"control_image":       base64.StdEncoding.EncodeToString(testPNG(t, 8, 8)),
		"num_inference_steps": 2,
		"seed":                42,
	}
	for k, v := range extra {
		if v == nil {
			delete(body, k)
		} else {
			body[k] = v
		}
	}
	return mustJSON(t, body)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type testEnv struct {
	h     *Handler
	store *memStore
	logs  *bytes.Buffer
}

func newTestEnv(t testing.TB, gen server.Generator, cfg *Config) *testEnv {
	t.Helper()
	if gen == nil {
		gen = fakegen.New(fakegen.Options{SlowStep: 200 * time.Millisecond})
	}
	if cfg == nil {
		c := DefaultConfig()
		c.OutputBucket = "out"
		c.InputBucket = "in"
		cfg = &c
	}
	var logs bytes.Buffer
	store := newMemStore()
	h := NewHandler(gen, Options{
		Config:       cfg,
		Store:        store,
		Logger:       slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, nil)),
		InitDuration: 1234 * time.Millisecond,
	})
	return &testEnv{h: h, store: store, logs: &logs}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// lambdaContext is an invocation context as the runtime makes it.
func lambdaContext(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: uuid.NewString()})
}

func (e *testEnv) invoke(t testing.TB, payload []byte) ([]byte, error) {
	t.Helper()
	return e.h.Invoke(lambdaContext(t, 10*time.Second), payload)
}

// errorType is the errorType Lambda reports for err, "" for nil.
func errorType(err error) string {
	var ie messages.InvokeResponse_Error
	if errors.As(err, &ie) {
		return ie.Type
	}
	if err != nil {
		return fmt.Sprintf("%T", err)
	}
	return ""
}

// genFunc adapts a function to server.Generator with the fake's info.
type genFunc func(context.Context, schema.Request) (*schema.Response, error)

func (f genFunc) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	return f(ctx, req)
}

func (f genFunc) Info() schema.ModelInfo { return fakegen.New(fakegen.Options{}).Info() }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }
