package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/schema"
)

// statusClientClosed is logged and counted when the client went away
// before the response (nginx's convention); the client never sees it.
const statusClientClosed = 499

// generate serves POST /v1/generate. Everything that can refuse a request
// cheaply (method, readiness, media types, body size, validation) runs
// before the generation slot is taken, so a slow upload or a bad request
// never holds it and a bad request gets its 400 even while busy.
func (h *Handler) generate(w http.ResponseWriter, r *http.Request, x *exchange) {
	start := time.Now()
	x.id = requestID(r)
	w.Header().Set("X-Request-Id", x.id)
	if !x.allow(w, r, http.MethodPost) {
		return
	}
	if !h.ready() {
		w.Header().Set("Retry-After", "1")
		x.fail(w, http.StatusServiceUnavailable, "not_ready", "", "the function is warming up; retry")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			x.fail(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "", "Content-Type must be application/json")
			return
		}
	}
	out, ok := negotiate(r.Header.Values("Accept"))
	if !ok {
		x.fail(w, http.StatusNotAcceptable, "not_acceptable", "", "Accept allows none of application/json, image/png, image/jpeg")
		return
	}
	body, ok := h.readBody(w, r, x)
	if !ok {
		return
	}
	info := h.gen.Info()
	req, err := schema.Decode(body, info)
	if err != nil {
		h.failRequest(w, x, err)
		return
	}
	decodeTime := time.Since(start)
	if !h.opts.AllowObjectKeys {
		if i := slices.IndexFunc(req.ControlImages, schema.ControlImage.IsObject); i >= 0 {
			x.fail(w, http.StatusBadRequest, "bad_request", controlImageField(info, i),
				"object keys are not accepted here: send the image inline as base64")
			return
		}
	}
	switch out {
	case outPNG:
		req.OutputFormat = schema.FormatPNG
	case outJPEG:
		req.OutputFormat = schema.FormatJPEG
	}
	if req.Seed == nil {
		seed := schema.RandomSeed()
		req.Seed = &seed
	}
	x.attrs = append(x.attrs, h.requestAttrs(req)...)

	if !h.busy.CompareAndSwap(false, true) {
		w.Header().Set("Retry-After", "1")
		x.fail(w, http.StatusTooManyRequests, "busy", "", "a generation is already running in this process; retry")
		return
	}
	// The slot is freed as soon as the generation ends, before the
	// response is written: a client that sends its next request the moment
	// it has read this one must not find the slot still taken.
	released := false
	release := func() {
		if !released {
			released = true
			h.busy.Store(false)
		}
	}
	defer release()

	ctx, cancel := context.WithTimeout(r.Context(), h.opts.GenerateTimeout)
	defer cancel()
	cold := !h.started.Swap(true)
	x.attrs = append(x.attrs, slog.Bool("cold", cold))
	resp, err := h.run(ctx, req)
	release()
	if err == nil && resp == nil {
		err = errors.New("generator returned neither a response nor an error")
	}
	if err != nil {
		h.metrics.generation(cold, time.Since(start), nil)
		h.failGeneration(ctx, w, r, x, err)
		return
	}
	if resp.TimingsMS == nil {
		resp.TimingsMS = schema.Timings{}
	}
	if _, ok := resp.TimingsMS[schema.StageDecode]; !ok {
		resp.TimingsMS.Add(schema.StageDecode, decodeTime)
	}
	h.metrics.generation(cold, time.Since(start), resp.TimingsMS)
	resp.RequestID = x.id
	if resp.BuildID == "" {
		resp.BuildID = info.BuildID
	}
	x.attrs = append(x.attrs, timingAttrs(resp.TimingsMS))
	h.writeResponse(w, x, out, req, resp)
}

// run calls the Generator, turning a panic into an error: the generation
// slot and the metrics must survive a pipeline bug.
func (h *Handler) run(ctx context.Context, req schema.Request) (resp *schema.Response, err error) {
	h.metrics.genInFlight.Add(1)
	defer h.metrics.genInFlight.Add(-1)
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("generator panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h.gen.Generate(ctx, req)
}

func requestID(r *http.Request) string {
	// A caller's id is kept when it is a UUID, so that its traces and ours
	// join; anything else could forge log lines.
	if id, err := uuid.Parse(r.Header.Get("X-Request-Id")); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// readBody reads the body up to MaxBodyBytes, answering 413 beyond.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, x *exchange) ([]byte, bool) {
	limit := h.opts.MaxBodyBytes
	tooLarge := func() {
		x.fail(w, http.StatusRequestEntityTooLarge, "too_large", "",
			fmt.Sprintf("request body over %d bytes (the control images may take %d bytes decoded)", limit, schema.MaxImageBytes))
	}
	if r.ContentLength > limit {
		tooLarge()
		return nil, false
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		tooLarge()
		return nil, false
	case err != nil:
		x.fail(w, http.StatusBadRequest, "bad_request", "", "reading the request body: "+err.Error())
		return nil, false
	}
	return buf.Bytes(), true
}

// controlImageField names control image i as the client most likely sent
// it: a one-ControlNet bundle's clients send control_image.
func controlImageField(info schema.ModelInfo, i int) string {
	if info.ControlNets == 1 {
		return "control_image"
	}
	return fmt.Sprintf("control_images[%d]", i)
}

// failRequest answers 400 for a request the schema refused.
func (h *Handler) failRequest(w http.ResponseWriter, x *exchange, err error) {
	var fe *schema.FieldError
	if errors.As(err, &fe) {
		x.fail(w, http.StatusBadRequest, "bad_request", fe.Field, fe.Msg)
		return
	}
	x.err = err
	x.fail(w, http.StatusBadRequest, "bad_request", "", err.Error())
}

// failGeneration maps a generation error to a status: the request's fault
// (400), the client gone (499), the deadline (504), or ours (500, details
// only in the log).
func (h *Handler) failGeneration(ctx context.Context, w http.ResponseWriter, r *http.Request, x *exchange, err error) {
	var fe *schema.FieldError
	switch {
	case errors.As(err, &fe):
		x.fail(w, http.StatusBadRequest, "bad_request", fe.Field, fe.Msg)
	case r.Context().Err() != nil:
		x.err = err
		x.fail(w, statusClientClosed, "canceled", "", "the client closed the request")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		x.err = err
		x.fail(w, http.StatusGatewayTimeout, "timeout", "",
			fmt.Sprintf("the generation did not finish within %s", h.opts.GenerateTimeout))
	default:
		x.err = err
		x.fail(w, http.StatusInternalServerError, "internal", "", "internal error; the log has details under this request id")
	}
}

func (h *Handler) writeResponse(w http.ResponseWriter, x *exchange, out output, req schema.Request, resp *schema.Response) {
	hdr := w.Header()
	hdr.Set("X-Seed", strconv.FormatUint(resp.Seed, 10))
	hdr.Set("X-Build-Id", resp.BuildID)
	hdr.Set("Server-Timing", serverTiming(resp.TimingsMS))
	hdr.Set("Cache-Control", "no-store")
	if out == outJSON {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	if len(resp.Images) == 0 || len(resp.Images[0].Data) == 0 {
		x.err = errors.New("generator returned no inline image")
		x.fail(w, http.StatusInternalServerError, "internal", "", "internal error; the log has details under this request id")
		return
	}
	img := resp.Images[0]
	ct := img.MIME
	if ct == "" {
		ct = schema.MIMEType(req.OutputFormat)
	}
	hdr.Set("Content-Type", ct)
	hdr.Set("Content-Length", strconv.Itoa(len(img.Data)))
	hdr.Set("X-Image-Count", strconv.Itoa(len(resp.Images)))
	w.WriteHeader(http.StatusOK)
	w.Write(img.Data) // a client gone away is no error of ours
}

// serverTiming renders timings as a Server-Timing header (W3C), which
// browsers' developer tools show next to the request.
func serverTiming(t schema.Timings) string {
	var parts []string
	for _, stage := range slices.Sorted(maps.Keys(t)) {
		if isToken(stage) {
			parts = append(parts, stage+";dur="+strconv.FormatFloat(t[stage], 'f', 3, 64))
		}
	}
	return strings.Join(parts, ", ")
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// requestAttrs describe a request in the log without its prompts (unless
// LogPrompts) and without image data (never).
func (h *Handler) requestAttrs(req schema.Request) []slog.Attr {
	attrs := []slog.Attr{
		slog.Uint64("seed", *req.Seed),
		slog.Int("steps", req.Steps),
		slog.Int("width", req.Width),
		slog.Int("height", req.Height),
		slog.String("scheduler", req.Scheduler),
		slog.Int("num_images", req.NumImages),
		slog.String("output_format", req.OutputFormat),
		slog.Int("control_images", len(req.ControlImages)),
	}
	if h.opts.LogPrompts {
		attrs = append(attrs, slog.String("prompt", req.Prompt), slog.String("negative_prompt", req.NegativePrompt))
	}
	return attrs
}

func timingAttrs(t schema.Timings) slog.Attr {
	attrs := make([]any, 0, len(t))
	for _, stage := range slices.Sorted(maps.Keys(t)) {
		attrs = append(attrs, slog.Float64(stage, t[stage]))
	}
	return slog.Group("timings_ms", attrs...)
}
