package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-lambda-go/lambdaurl"
	"github.com/google/uuid"

	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/server"
)

// maxLambdaTimeout is the longest a Lambda invocation may run; the HTTP
// handler's own generation timeout is raised to it so that the
// invocation deadline is what bounds a Function URL generation.
const maxLambdaTimeout = 15 * time.Minute

// Options configure a Handler (and Main).
type Options struct {
	// Config is the event sources' configuration; nil means
	// DefaultConfig for NewHandler and ConfigFromEnv for Main.
	Config *Config
	// Store is the object storage of SQS and S3 events and of object
	// references; nil makes NewHandler refuse such work and Main create
	// an S3Store from Config.
	Store ObjectStore
	// Logger receives one line per invocation; nil means JSON on stderr,
	// which Lambda sends to CloudWatch Logs.
	Logger *slog.Logger
	// HTTP configures the server.Handler of Function URL and API Gateway
	// requests. Its Logger defaults to Logger, its AllowObjectKeys and
	// LogPrompts come from Config, and a zero GenerateTimeout leaves the
	// invocation deadline in charge.
	HTTP server.Options
	// InitDuration is the time the process took to become ready (Main
	// measures it); the first invocation reports it.
	InitDuration time.Duration
}

// Handler is the Lambda handler of the function: a lambda.Handler that
// tells the event sources apart and runs each on the warm Generator. It
// runs one generation at a time.
type Handler struct {
	gen   server.Generator
	cfg   Config
	store ObjectStore
	log   *slog.Logger
	// serveURL is lambdaurl's adapter around the shared server.Handler.
	serveURL func(context.Context, *events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error)
	initDur  time.Duration
	// invoked is set by the first invocation, the cold one.
	invoked atomic.Bool
	// mu serializes generations, as the pipeline runs one at a time; an
	// event waits for its turn rather than failing.
	mu sync.Mutex
}

// NewHandler returns the handler of every event source around gen, the
// warm model.
func NewHandler(gen server.Generator, opts Options) *Handler {
	cfg := DefaultConfig()
	if opts.Config != nil {
		cfg = *opts.Config
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	h := &Handler{gen: gen, cfg: cfg, store: opts.Store, log: opts.Logger, initDur: opts.InitDuration}
	httpOpts := opts.HTTP
	if httpOpts.Logger == nil {
		httpOpts.Logger = opts.Logger
	}
	if httpOpts.GenerateTimeout <= 0 {
		httpOpts.GenerateTimeout = maxLambdaTimeout
	}
	httpOpts.AllowObjectKeys = httpOpts.AllowObjectKeys || cfg.URLObjectKeys
	httpOpts.LogPrompts = httpOpts.LogPrompts || cfg.LogPrompts
	srv := server.New(httpGenerator{h}, httpOpts)
	h.serveURL = lambdaurl.Wrap(recoverHTTP(srv, h.log))
	return h
}

// Event kinds, as logged.
const (
	eventDirect      = "direct"
	eventFunctionURL = "function_url"
	eventAPIGateway  = "apigateway_v2"
	eventSQS         = "sqs"
	eventS3          = "s3"
	eventUnsupported = "unsupported"
)

// invocation is what one Invoke carries through its event handler and
// leaves for its log line.
type invocation struct {
	awsID string
	start time.Time
	cold  bool
	// deadline bounds generations: the Lambda deadline less the margin.
	deadline    time.Time
	hasDeadline bool
	budget      time.Duration

	event  string
	status string
	attrs  []slog.Attr
	// timeout is set when the deadline stopped a generation, for the
	// HTTP path to word its 504 (the server words it by its own timeout).
	timeout *TimeoutError
}

type invocationKey struct{}

// Invoke implements lambda.Handler. A failure of one request is part of
// the event's reply (an HTTP status, a JSON error, batchItemFailures, an
// .error.json); an error is returned, and becomes a Lambda function error,
// only for events that cannot be served at all, for direct invokes that
// failed on our side (timeout, internal) and for S3 events with records
// that did, so that Lambda's retries and error metrics see them. No input
// makes it panic.
func (h *Handler) Invoke(ctx context.Context, payload []byte) (out []byte, err error) {
	inv := h.begin(ctx)
	defer func() {
		if p := recover(); p != nil {
			inv.status = "internal"
			inv.attrs = append(inv.attrs, slog.String("error_detail", fmt.Sprintf("panic: %v\n%s", p, debug.Stack())))
			out, err = nil, functionError("InternalError", "internal error in invocation "+inv.awsID+"; the function's log has details")
		}
		h.end(ctx, inv, err)
	}()
	kind, why := classify(payload)
	inv.event = kind
	switch kind {
	case eventFunctionURL, eventAPIGateway:
		return h.httpEvent(ctx, inv, payload)
	case eventSQS:
		return h.sqsEvent(ctx, inv, payload)
	case eventS3:
		return h.s3Event(ctx, inv, payload)
	case eventUnsupported:
		inv.status = "unsupported"
		return nil, functionError("UnsupportedEvent", why)
	}
	return h.direct(ctx, inv, payload)
}

func (h *Handler) begin(ctx context.Context) *invocation {
	inv := &invocation{start: time.Now(), cold: !h.invoked.Swap(true)}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		inv.awsID = lc.AwsRequestID
	}
	if d, ok := ctx.Deadline(); ok {
		remaining := time.Until(d)
		margin := min(h.cfg.DeadlineMargin, remaining/4)
		inv.deadline, inv.hasDeadline, inv.budget = d.Add(-margin), true, remaining-margin
	}
	return inv
}

func (h *Handler) end(ctx context.Context, inv *invocation, err error) {
	level := slog.LevelInfo
	switch {
	case err != nil, inv.status == "internal", inv.status == "timeout", inv.status == "failed",
		strings.HasPrefix(inv.status, "5"): // an HTTP status
		level = slog.LevelError
	case inv.status == "partial":
		level = slog.LevelWarn
	}
	attrs := make([]slog.Attr, 0, 8+len(inv.attrs))
	attrs = append(attrs,
		slog.String("aws_request_id", inv.awsID),
		slog.String("event", inv.event),
		slog.String("status", inv.status),
		slog.Bool("cold", inv.cold),
	)
	if inv.cold {
		attrs = append(attrs, slog.Float64("init_ms", ms(h.initDur)))
	}
	attrs = append(attrs, slog.Float64("duration_ms", ms(time.Since(inv.start))))
	if inv.hasDeadline {
		attrs = append(attrs, slog.Float64("budget_ms", ms(inv.budget)))
	}
	if err != nil {
		attrs = append(attrs, slog.String("function_error", errorMessage(err)))
	}
	attrs = append(attrs, inv.attrs...)
	h.log.LogAttrs(ctx, level, "invocation", attrs...)
}

// errorMessage is the message of an error as Lambda reports it.
func errorMessage(err error) string {
	var ie messages.InvokeResponse_Error
	if errors.As(err, &ie) {
		return ie.Type + ": " + ie.Message
	}
	return err.Error()
}

// functionError is an error Lambda reports with errorType typ.
func functionError(typ, msg string) error {
	return messages.InvokeResponse_Error{Type: typ, Message: msg}
}

// classify tells the event sources apart by the shape of the payload.
// Keys are matched exactly: encoding/json would match "records" in a
// direct request to "Records". A payload that is no JSON object is a
// direct invoke, for schema.Decode to explain what is wrong with it.
func classify(payload []byte) (kind, why string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return eventDirect, ""
	}
	if rc, ok := top["requestContext"]; ok {
		var ctx map[string]json.RawMessage
		if err := json.Unmarshal(rc, &ctx); err == nil {
			if _, ok := ctx["http"]; ok {
				var domain string
				_ = json.Unmarshal(ctx["domainName"], &domain)
				if isFunctionURLDomain(domain) {
					return eventFunctionURL, ""
				}
				return eventAPIGateway, ""
			}
		}
		if _, ok := top["httpMethod"]; ok {
			return eventUnsupported, "unsupported event: API Gateway REST API and payload format 1.0 events are not served; use a Function URL or an HTTP API with payload format 2.0"
		}
		return eventUnsupported, "unsupported event: requestContext without requestContext.http (want a Function URL or API Gateway HTTP API 2.0 event)"
	}
	if raw, ok := top["Records"]; ok {
		var records []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &records); err != nil {
			return eventUnsupported, "malformed event: Records must be a list of objects"
		}
		if len(records) == 0 {
			return eventUnsupported, "unsupported event: Records is empty"
		}
		var source string
		for i, r := range records {
			var s string
			if err := json.Unmarshal(r["eventSource"], &s); err != nil || s == "" {
				if err := json.Unmarshal(r["EventSource"], &s); err != nil || s == "" {
					return eventUnsupported, fmt.Sprintf("unsupported event: Records[%d] has no eventSource", i)
				}
			}
			if i > 0 && s != source {
				return eventUnsupported, fmt.Sprintf("unsupported event: Records mixes event sources %q and %q", source, s)
			}
			source = s
		}
		switch source {
		case "aws:sqs":
			return eventSQS, ""
		case "aws:s3":
			return eventS3, ""
		}
		return eventUnsupported, fmt.Sprintf("unsupported event source %q: this function serves aws:sqs and aws:s3 records, Function URLs, API Gateway HTTP APIs and direct invokes", source)
	}
	if _, ok := top["detail-type"]; ok {
		return eventUnsupported, "unsupported event: EventBridge events are not served; deliver S3 notifications to the function directly or through SQS"
	}
	return eventDirect, ""
}

// generate runs one generation of req under the invocation's deadline,
// resolving object references (bucket defaulting to bucket) first. Its
// errors are *schema.FieldError for the request's faults, *TimeoutError
// when the deadline stopped it, and others for ours.
func (h *Handler) generate(ctx context.Context, inv *invocation, id string, req schema.Request, bucket string) (*schema.Response, error) {
	start := time.Now()
	if req.Seed == nil {
		seed := schema.RandomSeed()
		req.Seed = &seed
	}
	req, err := h.resolveObjects(ctx, req, bucket)
	if err != nil {
		return nil, err
	}
	fetched := time.Since(start)
	genCtx, cancel := ctx, context.CancelFunc(func() {})
	if inv != nil && inv.hasDeadline {
		genCtx, cancel = context.WithDeadline(ctx, inv.deadline)
	}
	defer cancel()
	h.mu.Lock()
	resp, err := safeGenerate(genCtx, h.gen, req)
	h.mu.Unlock()
	if err == nil && resp == nil {
		err = errors.New("generator returned neither a response nor an error")
	}
	if err != nil {
		var fe *schema.FieldError
		if !errors.As(err, &fe) && errors.Is(genCtx.Err(), context.DeadlineExceeded) && inv != nil {
			inv.timeout = &TimeoutError{Budget: inv.budget, Margin: h.cfg.DeadlineMargin, Err: err}
			return nil, inv.timeout
		}
		return nil, err
	}
	resp.RequestID = id
	if resp.BuildID == "" {
		resp.BuildID = h.gen.Info().BuildID
	}
	if resp.TimingsMS == nil {
		resp.TimingsMS = schema.Timings{}
	}
	if fetched > time.Millisecond {
		resp.TimingsMS.Add("fetch", fetched)
	}
	return resp, nil
}

// safeGenerate turns a panic of the generator into an error: the warm
// model outlives a bug hit by one request.
func safeGenerate(ctx context.Context, gen server.Generator, req schema.Request) (resp *schema.Response, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("generator panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return gen.Generate(ctx, req)
}

// errOutOfTime fails the records of a batch that were not started before
// the deadline; Lambda redelivers them.
var errOutOfTime = fmt.Errorf("not started: the invocation ran out of time: %w", context.DeadlineExceeded)

// TimeoutError reports a generation stopped at the invocation deadline.
// It unwraps to context.DeadlineExceeded.
type TimeoutError struct {
	// Budget is the time the invocation had for its work.
	Budget time.Duration
	// Margin is the time kept back from the Lambda deadline to reply.
	Margin time.Duration
	// Err is the generator's error.
	Err error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("the generation did not finish within the invocation's %s (the Lambda timeout less up to %s kept to reply); raise the function timeout or ask for fewer steps or a smaller size",
		e.Budget.Round(time.Millisecond), e.Margin)
}

func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// failure is a failed request as its reply and the log describe it.
type failure struct {
	kind   string // bad_request, timeout, internal (the server's error kinds)
	status int    // the HTTP status an HTTP client would get
	field  string
	msg    string // for the client
	detail string // for the log only
}

func describe(err error) failure {
	var fe *schema.FieldError
	var te *TimeoutError
	switch {
	case errors.As(err, &fe):
		return failure{kind: "bad_request", status: http.StatusBadRequest, field: fe.Field, msg: fe.Msg}
	case errors.As(err, &te):
		return failure{kind: "timeout", status: http.StatusGatewayTimeout, msg: te.Error(), detail: te.Err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return failure{kind: "timeout", status: http.StatusGatewayTimeout, msg: err.Error()}
	}
	return failure{kind: "internal", status: http.StatusInternalServerError,
		msg: "internal error; the function's log has details under this request id", detail: err.Error()}
}

func (f failure) attrs() []slog.Attr {
	attrs := []slog.Attr{slog.String("error_kind", f.kind), slog.String("error", f.msg)}
	if f.field != "" {
		attrs = append(attrs, slog.String("field", f.field))
	}
	if f.detail != "" {
		attrs = append(attrs, slog.String("error_detail", f.detail))
	}
	return attrs
}

// requestID is id when it is a UUID (Lambda's request ids and SQS message
// ids are), so that our logs and Lambda's join; else a new one.
func requestID(id string) string {
	if u, err := uuid.Parse(id); err == nil {
		return u.String()
	}
	return uuid.NewString()
}

// httpGenerator is the Generator the HTTP handler sees: generations of
// Function URL and API Gateway requests run under the invocation's
// deadline and lock like the others.
type httpGenerator struct{ h *Handler }

func (g httpGenerator) Info() schema.ModelInfo { return g.h.gen.Info() }

func (g httpGenerator) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	inv, _ := ctx.Value(invocationKey{}).(*invocation)
	return g.h.generate(ctx, inv, "", req, g.h.cfg.InputBucket)
}

// recoverHTTP keeps a panic in the HTTP handler from killing the process:
// lambdaurl runs it on a goroutine of its own, where nothing else would
// recover it.
func recoverHTTP(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("http handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				http.Error(w, `{"error": {"message": "internal error"}}`, http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
