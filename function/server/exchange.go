package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// exchange collects what one request leaves for its log line and its
// metrics, so that each route writes its outcome once and observe reports
// it once.
type exchange struct {
	id    string // request id, set by the generate route
	route string
	// Set by fail: the error kind (metrics label), the field at fault and
	// the message the client got.
	kind, field, msg string
	// err is the internal detail of a 5xx, logged but not sent.
	err   error
	attrs []slog.Attr
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// fail writes an error response and records it.
func (x *exchange) fail(w http.ResponseWriter, status int, kind, field, msg string) {
	x.kind, x.field, x.msg = kind, field, msg
	writeJSON(w, status, errorBody{errorDetail{Field: field, Message: msg, RequestID: x.id}})
}

// allow answers 405 unless the request uses one of methods.
func (x *exchange) allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	x.fail(w, http.StatusMethodNotAllowed, "method_not_allowed", "", r.Method+" not allowed; use "+strings.Join(methods, " or "))
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only a Generator could hand us something unmarshalable.
		http.Error(w, `{"error": {"message": "internal error: response not encodable"}}`, http.StatusInternalServerError)
		return
	}
	data = append(data, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(data) // a client gone away is no error of ours
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe wraps a route: in-flight gauge, request and error counters, and
// one log line at level (Error for 5xx) when the route has run.
func (h *Handler) observe(route string, level slog.Level, fn func(http.ResponseWriter, *http.Request, *exchange)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.metrics.httpInFlight.Add(1)
		defer h.metrics.httpInFlight.Add(-1)
		sw := &statusWriter{ResponseWriter: w}
		x := &exchange{route: route}
		fn(sw, r, x)

		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		h.metrics.request(route, status, x.kind)
		if status >= 500 && status != statusClientClosed {
			level = slog.LevelError
		}
		ctx := r.Context()
		if !h.log.Enabled(ctx, level) {
			return
		}
		attrs := make([]slog.Attr, 0, 12+len(x.attrs))
		if x.id != "" {
			attrs = append(attrs, slog.String("id", x.id))
		}
		attrs = append(attrs,
			slog.String("route", route),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Float64("duration_ms", ms(time.Since(start))),
			slog.Int64("bytes_in", r.ContentLength),
			slog.Int64("bytes_out", sw.bytes),
		)
		if x.kind != "" {
			attrs = append(attrs, slog.String("error_kind", x.kind), slog.String("error", x.msg))
			if x.field != "" {
				attrs = append(attrs, slog.String("field", x.field))
			}
		}
		if x.err != nil {
			attrs = append(attrs, slog.String("error_detail", x.err.Error()))
		}
		attrs = append(attrs, x.attrs...)
		h.log.LogAttrs(ctx, level, "request", attrs...)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
