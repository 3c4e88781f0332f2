// Package server is the HTTP front of the function: it turns an HTTP
// request into a validated schema.Request, runs it on a Generator (the
// pipeline over a loaded bundle) and writes the schema.Response back. In
// the data flow it sits before and after the pipeline: request bytes ->
// schema.Decode -> Generator.Generate -> JSON or image bytes.
//
// The same http.Handler serves edge nodes (Run) and AWS Lambda Function
// URLs (wrapped by aws-lambda-go's lambdaurl), so it keeps Lambda's model:
// one generation at a time per process, refused with 429 rather than
// queued, and bodies bounded by the 6 MB synchronous payload limit.
//
// Routes:
//
//	POST /v1/generate  JSON request; JSON response, or the first image's bytes
//	                   when Accept prefers image/png or image/jpeg
//	GET  /healthz      200 while the process runs
//	GET  /readyz       200 once warm-up finished (Options.Ready), else 503
//	GET  /metrics      Prometheus text format
//
// A successful generate response carries the headers X-Request-Id, X-Seed,
// X-Build-Id and Server-Timing (stage timings). An Accept header that
// prefers one image type sets the output format, overriding output_format;
// image/* keeps output_format.
//
// Errors are JSON, {"error": {"field", "message", "request_id"}}: 400 for
// a request the schema refuses (naming the field), 405, 406, 413, 415,
// 429 while a generation runs, 503 before warm-up, 504 when the
// generation passes Options.GenerateTimeout, 500 otherwise. A client that
// goes away cancels the generation through the request context; such a
// request is logged and counted with status 499.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// Generator runs generations; the pipeline over a loaded bundle implements
// it. Generate may assume the request passed schema.Decode against Info
// and has a seed; it returns a *schema.FieldError for request content that
// only generation can find wrong (a corrupt image body past a valid
// header), and honours ctx cancellation.
type Generator interface {
	Generate(ctx context.Context, req schema.Request) (*schema.Response, error)
	Info() schema.ModelInfo
}

// Defaults for Options.
const (
	// DefaultMaxBodyBytes is the Lambda synchronous payload limit (6 MiB)
	// plus room for the JSON around the control image.
	DefaultMaxBodyBytes = schema.MaxImageBytes + 64<<10
	// DefaultGenerateTimeout bounds one generation; 50 steps at 768x768
	// on a CPU take minutes.
	DefaultGenerateTimeout = 5 * time.Minute
)

// Options configure a Handler. The zero value is usable.
type Options struct {
	// Logger receives one line per request; nil means JSON on stderr.
	Logger *slog.Logger
	// Ready is closed when warm-up has finished; until then /readyz and
	// /v1/generate answer 503. Nil means ready from the start.
	Ready <-chan struct{}
	// MaxBodyBytes bounds a request body (413 beyond); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// GenerateTimeout bounds one generation (504 beyond); 0 means
	// DefaultGenerateTimeout. Under Run, keep ServeOptions.WriteTimeout
	// above ReadTimeout plus this, or the 504 cannot be written.
	GenerateTimeout time.Duration
	// AllowObjectKeys lets control images name storage objects, which the
	// Generator then fetches. Off by default: an edge client must not make
	// the function read objects with the function's credentials.
	AllowObjectKeys bool
	// LogPrompts adds prompt and negative prompt to the request log lines,
	// for debugging. Image data is never logged.
	LogPrompts bool
}

// Handler is the http.Handler of the function. It is safe for concurrent
// use; it runs one generation at a time.
type Handler struct {
	gen     Generator
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
	// busy is the non-blocking lock of the one generation slot.
	busy atomic.Bool
	// started is set by the first generation: that one is the cold start.
	started atomic.Bool
}

// New returns a Handler that runs generations on gen.
func New(gen Generator, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.GenerateTimeout <= 0 {
		opts.GenerateTimeout = DefaultGenerateTimeout
	}
	h := &Handler{gen: gen, opts: opts, log: opts.Logger, metrics: newMetrics(time.Now())}
	h.mux = http.NewServeMux()
	h.mux.Handle("/v1/generate", h.observe("generate", slog.LevelInfo, h.generate))
	h.mux.Handle("/healthz", h.observe("healthz", slog.LevelDebug, h.healthz))
	h.mux.Handle("/readyz", h.observe("readyz", slog.LevelDebug, h.readyz))
	h.mux.Handle("/metrics", h.observe("metrics", slog.LevelDebug, h.serveMetrics))
	h.mux.Handle("/", h.observe("other", slog.LevelInfo, h.notFound))
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) ready() bool {
	if h.opts.Ready == nil {
		return true
	}
	select {
	case <-h.opts.Ready:
		return true
	default:
		return false
	}
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request, x *exchange) {
	if !x.allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request, x *exchange) {
	if !x.allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	if !h.ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "warming up"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request, x *exchange) {
	if !x.allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	ready := h.ready()
	buildID := ""
	if ready {
		buildID = h.gen.Info().BuildID
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.metrics.write(w, ready, buildID, time.Now())
}

func (h *Handler) notFound(w http.ResponseWriter, r *http.Request, x *exchange) {
	x.fail(w, http.StatusNotFound, "not_found", "", "no route for "+r.URL.Path)
}
