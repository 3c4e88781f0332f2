package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/schema"
)

var testInfo = schema.ModelInfo{
	BuildID:     "7f1f6d2e-3c1b-4b8a-9a43-2f9d1c0e5b77",
	Buckets:     []schema.Size{{Width: 512, Height: 512}, {Width: 768, Height: 512}},
	MaxImages:   2,
	ControlNets: 1,
}

// fakeGen is a Generator whose Generate runs fn (default: an immediate
// response echoing the request) and records the requests it got.
type fakeGen struct {
	fn func(ctx context.Context, req schema.Request) (*schema.Response, error)

	mu   sync.Mutex
	reqs []schema.Request
}

func (g *fakeGen) Info() schema.ModelInfo { return testInfo }

func (g *fakeGen) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	g.mu.Lock()
	g.reqs = append(g.reqs, req)
	fn := g.fn
	g.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	return echo(req), nil
}

func (g *fakeGen) setFn(fn func(context.Context, schema.Request) (*schema.Response, error)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fn = fn
}

func (g *fakeGen) last() schema.Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reqs[len(g.reqs)-1]
}

// imageBytes stand in for encoded output images.
var imageBytes = map[string][]byte{schema.FormatPNG: []byte("\x89PNG fake"), schema.FormatJPEG: []byte("\xff\xd8\xff fake")}

func echo(req schema.Request) *schema.Response {
	img := schema.Image{MIME: schema.MIMEType(req.OutputFormat), Data: imageBytes[req.OutputFormat]}
	return &schema.Response{
		Seed: *req.Seed, Steps: req.Steps, Width: req.Width, Height: req.Height,
		Images:    []schema.Image{img},
		TimingsMS: schema.Timings{schema.StageDenoise: 1500, schema.StageVAEDecode: 200},
	}
}

// blocking returns a Generate that signals started, then waits for
// release or the context.
func blocking() (fn func(context.Context, schema.Request) (*schema.Response, error), started, release chan struct{}) {
	started, release = make(chan struct{}, 8), make(chan struct{})
	fn = func(ctx context.Context, req schema.Request) (*schema.Response, error) {
		started <- struct{}{}
		select {
		case <-release:
			return echo(req), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return fn, started, release
}

// syncBuffer collects log output written from handler goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(b.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testServer struct {
	*httptest.Server
	gen  *fakeGen
	h    *Handler
	logs *syncBuffer
}

func newTestServer(t *testing.T, gen *fakeGen, opts Options) *testServer {
	t.Helper()
	logs := new(syncBuffer)
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := New(gen, opts)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testServer{srv, gen, h, logs}
}

type result struct {
	status int
	header http.Header
	body   []byte
	err    errorDetail
}

func (s *testServer) do(t *testing.T, method, path, body string, header ...string) result {
	t.Helper()
	return s.doCtx(t, context.Background(), method, path, body, header...)
}

func (s *testServer) doCtx(t *testing.T, ctx context.Context, method, path, body string, header ...string) result {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := result{status: resp.StatusCode, header: resp.Header, body: data}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") == "application/json" {
		var eb errorBody
		if err := json.Unmarshal(data, &eb); err != nil {
			t.Fatalf("error body %q: %v", data, err)
		}
		r.err = eb.Error
	}
	return r
}

func pngBase64(t testing.TB) string {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// goodBody is a valid request; extra members are spliced in as raw JSON.
func goodBody(t testing.TB, extra ...string) string {
	members := append([]string{`"prompt": "a secret prompt"`, `"control_image": "` + pngBase64(t) + `"`}, extra...)
	return "{" + strings.Join(members, ", ") + "}"
}

func TestGenerateJSON(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, Options{})
	r := s.do(t, "POST", "/v1/generate", goodBody(t), "Content-Type", "application/json")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var resp schema.Response
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(resp.RequestID); err != nil || r.header.Get("X-Request-Id") != resp.RequestID {
		t.Errorf("request id %q, header %q", resp.RequestID, r.header.Get("X-Request-Id"))
	}
	got := s.gen.last()
	if got.Seed == nil || *got.Seed != resp.Seed || resp.Seed > schema.MaxRandomSeed ||
		r.header.Get("X-Seed") != strconv.FormatUint(resp.Seed, 10) {
		t.Errorf("seed: generator got %v, response %d, header %q", got.Seed, resp.Seed, r.header.Get("X-Seed"))
	}
	if resp.BuildID != testInfo.BuildID || r.header.Get("X-Build-Id") != testInfo.BuildID {
		t.Errorf("build id %q", resp.BuildID)
	}
	if _, ok := resp.TimingsMS[schema.StageDecode]; !ok || resp.TimingsMS[schema.StageDenoise] != 1500 {
		t.Errorf("timings %v", resp.TimingsMS)
	}
	if st := r.header.Get("Server-Timing"); !strings.Contains(st, "denoise;dur=1500.000") {
		t.Errorf("Server-Timing %q", st)
	}
	if len(resp.Images) != 1 || !bytes.Equal(resp.Images[0].Data, imageBytes["png"]) || resp.Images[0].MIME != "image/png" {
		t.Errorf("images %+v", resp.Images)
	}
	if got.Steps != schema.DefaultSteps || got.Prompt != "a secret prompt" {
		t.Errorf("generator got %+v", got)
	}

	// A seed sent is the seed used; a caller's UUID request id is kept.
	id := uuid.NewString()
	r = s.do(t, "POST", "/v1/generate", goodBody(t, `"seed": 18446744073709551615`), "X-Request-Id", id)
	if r.status != http.StatusOK || r.header.Get("X-Seed") != "18446744073709551615" || r.header.Get("X-Request-Id") != id {
		t.Errorf("status %d, seed %q, id %q", r.status, r.header.Get("X-Seed"), r.header.Get("X-Request-Id"))
	}
	r = s.do(t, "POST", "/v1/generate", goodBody(t), "X-Request-Id", "forged id")
	if _, err := uuid.Parse(r.header.Get("X-Request-Id")); err != nil {
		t.Errorf("non-UUID request id kept: %q", r.header.Get("X-Request-Id"))
	}
}

func TestGenerateImageAccept(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, Options{})
	tests := []struct {
		accept, extra string
		status        int
		ctype         string
	}{
		{"image/png", "", 200, "image/png"},
		{"image/jpeg", "", 200, "image/jpeg"},
		{"image/jpeg", `"output_format": "png"`, 200, "image/jpeg"}, // Accept wins
		{"image/*", `"output_format": "jpeg"`, 200, "image/jpeg"},
		{"image/*", "", 200, "image/png"},
		{"image/png, */*;q=0.8", "", 200, "image/png"},
		{"application/json, image/png;q=0.5", "", 200, "application/json"},
		{"*/*", "", 200, "application/json"},
		{"image/webp", "", 406, "application/json"},
		{"application/json;q=0, image/*;q=0", "", 406, "application/json"},
	}
	for _, tt := range tests {
		var extra []string
		if tt.extra != "" {
			extra = append(extra, tt.extra)
		}
		r := s.do(t, "POST", "/v1/generate", goodBody(t, extra...), "Accept", tt.accept)
		if r.status != tt.status || r.header.Get("Content-Type") != tt.ctype {
			t.Errorf("Accept %q: status %d, Content-Type %q; want %d, %q", tt.accept, r.status, r.header.Get("Content-Type"), tt.status, tt.ctype)
			continue
		}
		if tt.status == 200 && strings.HasPrefix(tt.ctype, "image/") {
			format := strings.TrimPrefix(tt.ctype, "image/")
			if !bytes.Equal(r.body, imageBytes[format]) || r.header.Get("X-Seed") == "" || r.header.Get("X-Request-Id") == "" {
				t.Errorf("Accept %q: body %q, headers %v", tt.accept, r.body, r.header)
			}
		}
	}
}

// TestBadInputs checks that each bad request gets a 4xx naming the field
// (where there is one) and that the next good request is served.
func TestBadInputs(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, Options{})
	huge := strings.Repeat("a", 10<<20)
	tests := []struct {
		name   string
		body   string
		header []string
		status int
		field  string
	}{
		{"malformed JSON", `{"prompt": `, nil, 400, "prompt"},
		{"malformed JSON, no field", `{,}`, nil, 400, ""},
		{"not an object", `"prompt"`, nil, 400, ""},
		{"wrong type", goodBody(t, `"num_inference_steps": "20"`), nil, 400, "num_inference_steps"},
		{"unknown field", goodBody(t, `"strength": 0.5`), nil, 400, "strength"},
		{"duplicated field", goodBody(t, `"prompt": "again"`), nil, 400, "prompt"},
		{"invalid base64", `{"control_image": "not base64!"}`, nil, 400, "control_image"},
		{"not an image", `{"control_image": "` + base64.StdEncoding.EncodeToString([]byte("hello, world")) + `"}`, nil, 400, "control_image"},
		{"missing control image", `{"prompt": "p"}`, nil, 400, "control_image"},
		{"object key refused", `{"control_image": {"key": "in/a.png"}}`, nil, 400, "control_image"},
		{"size not a bucket", goodBody(t, `"width": 1024, "height": 1024`), nil, 400, "width"},
		{"width not multiple of 8", goodBody(t, `"width": 510`), nil, 400, "width"},
		{"steps 0", goodBody(t, `"num_inference_steps": 0`), nil, 400, "num_inference_steps"},
		{"steps 10000", goodBody(t, `"num_inference_steps": 10000`), nil, 400, "num_inference_steps"},
		{"overflow 1e999", goodBody(t, `"guidance_scale": 1e999`), nil, 400, "guidance_scale"},
		{"NaN string", goodBody(t, `"guidance_scale": "NaN"`), nil, 400, "guidance_scale"},
		{"Infinity string", goodBody(t, `"controlnet_conditioning_scale": "Infinity"`), nil, 400, "controlnet_conditioning_scale"},
		{"num_images over max", goodBody(t, `"num_images": 3`), nil, 400, "num_images"},
		{"prompt over limit", goodBody(t, `"negative_prompt": "`+strings.Repeat("x", schema.MaxPromptBytes+1)+`"`), nil, 400, "negative_prompt"},
		{"10 MB prompt", `{"prompt": "` + huge + `"}`, nil, 413, ""},
		{"10 MB body, chunked", "", []string{"chunked"}, 413, ""},
		{"wrong content type", goodBody(t), []string{"Content-Type", "text/plain"}, 415, ""},
		{"wrong method", "", []string{"GET"}, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r result
			switch {
			case len(tt.header) == 1 && tt.header[0] == "GET":
				r = s.do(t, "GET", "/v1/generate", "")
				if r.header.Get("Allow") != "POST" {
					t.Errorf("Allow %q", r.header.Get("Allow"))
				}
			case len(tt.header) == 1 && tt.header[0] == "chunked":
				r = s.postReader(t, io.MultiReader(strings.NewReader(`{"prompt": "`), strings.NewReader(huge)))
			default:
				r = s.do(t, "POST", "/v1/generate", tt.body, tt.header...)
			}
			if r.status != tt.status || r.err.Field != tt.field || r.err.Message == "" {
				t.Errorf("status %d, error %+v; want %d naming %q", r.status, r.err, tt.status, tt.field)
			}
			if _, err := uuid.Parse(r.err.RequestID); err != nil {
				t.Errorf("error body without request id: %+v", r.err)
			}
			if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 200 {
				t.Errorf("next good request: status %d: %s", r.status, r.body)
			}
		})
	}
}

// postReader posts a body of unknown length (chunked encoding).
func (s *testServer) postReader(t *testing.T, body io.Reader) result {
	t.Helper()
	resp, err := s.Client().Post(s.URL+"/v1/generate", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb errorBody
	json.Unmarshal(data, &eb)
	return result{status: resp.StatusCode, header: resp.Header, body: data, err: eb.Error}
}

func TestBusy(t *testing.T) {
	fn, started, release := blocking()
	s := newTestServer(t, &fakeGen{fn: fn}, Options{})
	first := make(chan result, 1)
	go func() { first <- s.do(t, "POST", "/v1/generate", goodBody(t)) }()
	<-started

	r := s.do(t, "POST", "/v1/generate", goodBody(t))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.err.Message == "" {
		t.Errorf("second generation while busy: status %d, %+v", r.status, r.err)
	}
	// A bad request is refused for what it is, busy or not.
	if r := s.do(t, "POST", "/v1/generate", goodBody(t, `"num_inference_steps": 0`)); r.status != 400 {
		t.Errorf("bad request while busy: status %d", r.status)
	}
	if r := s.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("healthz while busy: %d", r.status)
	}
	if m := s.do(t, "GET", "/metrics", ""); !strings.Contains(string(m.body), "controlfn_generations_in_flight 1\n") {
		t.Errorf("metrics while busy:\n%s", m.body)
	}
	close(release)
	if r := <-first; r.status != 200 {
		t.Errorf("first generation: status %d", r.status)
	}
	if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 200 {
		t.Errorf("after the first finished: status %d", r.status)
	}
}

func TestReadiness(t *testing.T) {
	ready := make(chan struct{})
	s := newTestServer(t, &fakeGen{}, Options{Ready: ready})
	if r := s.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("healthz before warm-up: %d", r.status)
	}
	if r := s.do(t, "GET", "/readyz", ""); r.status != 503 {
		t.Errorf("readyz before warm-up: %d", r.status)
	}
	if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("generate before warm-up: %d", r.status)
	}
	if m := s.do(t, "GET", "/metrics", ""); !strings.Contains(string(m.body), "controlfn_ready 0\n") {
		t.Errorf("metrics before warm-up:\n%s", m.body)
	}
	close(ready)
	if r := s.do(t, "GET", "/readyz", ""); r.status != 200 {
		t.Errorf("readyz after warm-up: %d", r.status)
	}
	if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 200 {
		t.Errorf("generate after warm-up: %d", r.status)
	}
}

func TestRoutes(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, Options{})
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/healthz", 200},
		{"HEAD", "/healthz", 200},
		{"POST", "/healthz", 405},
		{"DELETE", "/metrics", 405},
		{"GET", "/nope", 404},
		{"GET", "/v1/generate/x", 404},
	} {
		if r := s.do(t, tt.method, tt.path, ""); r.status != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, r.status, tt.status)
		}
	}
}

func TestGenerationErrors(t *testing.T) {
	tests := []struct {
		name    string
		fn      func(ctx context.Context, req schema.Request) (*schema.Response, error)
		timeout time.Duration
		status  int
		field   string
		kind    string
	}{
		{"field error", func(context.Context, schema.Request) (*schema.Response, error) {
			return nil, fmt.Errorf("pipeline: %w", &schema.FieldError{Field: "control_image", Msg: "corrupt PNG data"})
		}, 0, 400, "control_image", "bad_request"},
		{"deadline", func(ctx context.Context, req schema.Request) (*schema.Response, error) {
			<-ctx.Done()
			return nil, fmt.Errorf("denoise step 3: %w", ctx.Err())
		}, 20 * time.Millisecond, 504, "", "timeout"},
		{"deadline, error not wrapped", func(ctx context.Context, req schema.Request) (*schema.Response, error) {
			<-ctx.Done()
			return nil, errors.New("aborted")
		}, 20 * time.Millisecond, 504, "", "timeout"},
		{"internal", func(context.Context, schema.Request) (*schema.Response, error) {
			return nil, errors.New("device lost at /secret/path")
		}, 0, 500, "", "internal"},
		{"panic", func(context.Context, schema.Request) (*schema.Response, error) {
			panic("index out of range")
		}, 0, 500, "", "internal"},
		{"nil response", func(context.Context, schema.Request) (*schema.Response, error) {
			return nil, nil
		}, 0, 500, "", "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen := &fakeGen{fn: tt.fn}
			s := newTestServer(t, gen, Options{GenerateTimeout: tt.timeout})
			r := s.do(t, "POST", "/v1/generate", goodBody(t))
			if r.status != tt.status || r.err.Field != tt.field {
				t.Fatalf("status %d, %+v; want %d naming %q", r.status, r.err, tt.status, tt.field)
			}
			if strings.Contains(r.err.Message, "secret") {
				t.Errorf("internal detail leaked: %q", r.err.Message)
			}
			m := s.do(t, "GET", "/metrics", "")
			if !strings.Contains(string(m.body), `controlfn_errors_total{kind="`+tt.kind+`"} 1`) {
				t.Errorf("metrics lack the %s error:\n%s", tt.kind, m.body)
			}
			// The slot is free again.
			gen.setFn(nil)
			if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 200 {
				t.Errorf("next request: status %d", r.status)
			}
		})
	}
}

func TestClientGoneCancelsGeneration(t *testing.T) {
	canceled := make(chan error, 1)
	started := make(chan struct{})
	gen := &fakeGen{fn: func(ctx context.Context, req schema.Request) (*schema.Response, error) {
		close(started)
		<-ctx.Done()
		canceled <- ctx.Err()
		return nil, ctx.Err()
	}}
	s := newTestServer(t, gen, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/generate", strings.NewReader(goodBody(t)))
	if _, err := s.Client().Do(req); err == nil {
		t.Fatal("request succeeded")
	}
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("generation context: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the generation was not canceled")
	}
	gen.setFn(nil)
	// The handler finishes after Generate returns; wait for the slot.
	deadline := time.Now().Add(5 * time.Second)
	for s.h.busy.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r := s.do(t, "POST", "/v1/generate", goodBody(t)); r.status != 200 {
		t.Errorf("next request: status %d", r.status)
	}
	m := s.do(t, "GET", "/metrics", "")
	if !strings.Contains(string(m.body), `controlfn_http_requests_total{route="generate",code="499"} 1`) {
		t.Errorf("metrics lack the 499:\n%s", m.body)
	}
}

// A client sending requests back to back (each as soon as the previous
// response is read) never sees 429: the slot is free before the response
// is written.
func TestSequentialRequestsNeverBusy(t *testing.T) {
	ready := make(chan struct{})
	close(ready)
	srv := httptest.NewServer(New(&fakeGen{}, Options{Ready: ready}))
	defer srv.Close()
	body := goodBody(t)
	for i := 0; i < 200; i++ {
		resp, err := http.Post(srv.URL+"/v1/generate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
}
