package lambda

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// DirectResponse is the reply to a direct invoke that generated: the
// schema.Response, with whether this invocation was the process's first.
type DirectResponse struct {
	*schema.Response
	// Cold is true on the first invocation of the process.
	Cold bool `json:"cold"`
	// InitMS is the time the process took to become ready, reported on
	// the cold invocation only.
	InitMS *float64 `json:"init_ms,omitempty"`
}

// ErrorResponse is the reply to a direct invoke the request's content
// made fail: the body the HTTP server answers with a 400, with Status the
// HTTP status an HTTP client would have got.
type ErrorResponse struct {
	Error  errorDetail `json:"error"`
	Status int         `json:"status"`
	Cold   bool        `json:"cold"`
	InitMS *float64    `json:"init_ms,omitempty"`
}

// errorBody and errorDetail are the server's error format.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// direct serves a payload that is a schema request. The request's faults
// come back as an ErrorResponse; a timeout or an internal error as a
// function error (errorType GenerationTimeout or InternalError), which
// Lambda counts as an error and retries for asynchronous invokes.
func (h *Handler) direct(ctx context.Context, inv *invocation, payload []byte) ([]byte, error) {
	id := requestID(inv.awsID)
	inv.attrs = append(inv.attrs, slog.String("request_id", id))
	start := time.Now()
	req, err := schema.Decode(payload, h.gen.Info())
	var resp *schema.Response
	if err == nil {
		decoded := time.Since(start)
		withSeed(&req)
		inv.attrs = append(inv.attrs, requestAttrs(req)...)
		resp, err = h.generate(ctx, inv, id, req, h.cfg.InputBucket)
		if err == nil {
			if _, ok := resp.TimingsMS[schema.StageDecode]; !ok {
				resp.TimingsMS.Add(schema.StageDecode, decoded)
			}
		}
	}
	if err != nil {
		f := describe(err)
		inv.status = f.kind
		inv.attrs = append(inv.attrs, f.attrs()...)
		switch f.kind {
		case "timeout":
			return nil, functionError("GenerationTimeout", fmt.Sprintf("%s (request id %s)", f.msg, id))
		case "internal":
			return nil, functionError("InternalError", fmt.Sprintf("internal error; the function's log has details under request id %s", id))
		}
		out := ErrorResponse{
			Error:  errorDetail{Field: f.field, Message: f.msg, RequestID: id},
			Status: f.status, Cold: inv.cold, InitMS: h.initMS(inv),
		}
		return marshal(out)
	}
	inv.status = "ok"
	inv.attrs = append(inv.attrs, timingAttrs(resp.TimingsMS))
	return marshal(DirectResponse{Response: resp, Cold: inv.cold, InitMS: h.initMS(inv)})
}

// withSeed draws a seed for a request that has none, as the HTTP server
// does, so that the log and the reply name the seed used.
func withSeed(req *schema.Request) {
	if req.Seed == nil {
		seed := schema.RandomSeed()
		req.Seed = &seed
	}
}

func (h *Handler) initMS(inv *invocation) *float64 {
	if !inv.cold {
		return nil
	}
	v := ms(h.initDur)
	return &v
}

func marshal(v any) ([]byte, error) {
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding the response: %w", err)
	}
	return out, nil
}

// requestAttrs describe a request in the log without prompts or image
// data.
func requestAttrs(req schema.Request) []slog.Attr {
	seed := ""
	if req.Seed != nil {
		seed = strconv.FormatUint(*req.Seed, 10)
	}
	return []slog.Attr{
		slog.String("seed", seed),
		slog.Int("steps", req.Steps),
		slog.Int("width", req.Width),
		slog.Int("height", req.Height),
		slog.String("scheduler", req.Scheduler),
		slog.Int("num_images", req.NumImages),
	}
}

func timingAttrs(t schema.Timings) slog.Attr {
	attrs := make([]any, 0, len(t))
	for _, stage := range slices.Sorted(maps.Keys(t)) {
		attrs = append(attrs, slog.Float64(stage, t[stage]))
	}
	return slog.Group("timings_ms", attrs...)
}
