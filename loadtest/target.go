package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// Targets.
const (
	// TargetHTTP is the edge server, controlfn serve.
	TargetHTTP = "http"
	// TargetRIE is the Lambda bootstrap, controlfn lambda, under the
	// Runtime Interface Emulator.
	TargetRIE = "rie"
)

const (
	generatePath = "/v1/generate"
	readyPath    = "/readyz"
	// invokePath is the Lambda Invoke API path the emulator serves.
	invokePath = "/2015-03-31/functions/function/invocations"
	// probeEvery is how often a starting process is asked whether it is
	// up; it bounds the ready_wait part of an HTTP cold start.
	probeEvery = 5 * time.Millisecond
	// maxResponseBytes bounds a response body: images are inline, and a
	// run of large images must still not exhaust memory.
	maxResponseBytes = 256 << 20
)

// Error kinds a sample can carry besides the HTTP status ones ("http_404").
const (
	KindBusy      = "busy"      // 429: the process was running another generation
	KindThrottled = "throttled" // mixed mode: every allowed process was busy
	KindStart     = "start"     // the process did not start
	KindTimeout   = "timeout"   // the run's --timeout ended the request
	KindTransport = "transport" // connection refused or reset, process died
	KindBadReply  = "bad_reply" // a 200 whose body is not a response
	// KindFunction prefixes the errorType of a Lambda function error
	// ("function_error:InternalError").
	KindFunction = "function_error:"
)

// launcher starts processes of one target and knows how to call them.
type launcher struct {
	target string
	bin    string // controlfn
	rie    string // aws-lambda-rie
	bundle string // absolute
	logDir string // where each process's output goes; "" for none
	env    []string
	client *http.Client
	// external is the --url target: no process of ours.
	external *url.URL
	started  atomic.Int64 // processes started, to number them
}

// instance is one process serving requests: one edge server, or one
// emulator with its bootstrap (one Lambda execution environment).
type instance struct {
	id      int
	url     string   // where requests are posted
	proc    *process // nil for the --url target
	logFile string   // base name of its output file
	spawned time.Time
	// upMS is the emulator's own start (until it listens): outside every
	// cold-start total (on AWS the equivalent machinery is already up).
	upMS float64
}

func newClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, whatever the environment says
		MaxIdleConnsPerHost: max(concurrency, 2),
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

// externalInstance is the running process at --url.
func (l *launcher) externalInstance() *instance {
	path := generatePath
	if l.target == TargetRIE {
		path = invokePath
	}
	return &instance{id: 0, url: l.external.String() + path}
}

// launch starts a process and waits until it can take a request: the
// server until /readyz answers 200 (after its warm-up), the emulator
// until it listens (its bootstrap starts on the first invoke). A lost
// race for a free port is retried with another.
func (l *launcher) launch(ctx context.Context, label string) (*instance, error) {
	var lastErr error
	for range 3 {
		inst, err := l.launchOnce(ctx, label)
		if err == nil {
			return inst, nil
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func (l *launcher) launchOnce(ctx context.Context, label string) (*instance, error) {
	id := int(l.started.Add(1))
	inst := &instance{id: id}
	logPath := ""
	if l.logDir != "" {
		inst.logFile = fmt.Sprintf("%s-%d.log", label, id)
		logPath = filepath.Join(l.logDir, inst.logFile)
	}
	var (
		name  string
		args  []string
		env   = l.env
		probe func() bool
	)
	switch l.target {
	case TargetHTTP:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		inst.url = base + generatePath
		name, args = l.bin, []string{"serve", "--bundle", l.bundle, "--addr", fmt.Sprintf("127.0.0.1:%d", port)}
		probe = func() bool { return l.ready(ctx, base+readyPath) }
	case TargetRIE:
		emu, err := freePort()
		if err != nil {
			return nil, err
		}
		api, err := freePort()
		if err != nil {
			return nil, err
		}
		emuAddr := fmt.Sprintf("127.0.0.1:%d", emu)
		inst.url = "http://" + emuAddr + invokePath
		name = l.rie
		args = []string{
			"--runtime-interface-emulator-address", emuAddr,
			"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", api),
			l.bin, "lambda",
		}
		env = append(slices.Clip(env), "CONTROLFN_BUNDLE="+l.bundle) // launches run concurrently
		probe = func() bool { return listening(emuAddr) }
	default:
		return nil, fmt.Errorf("unknown target %q", l.target)
	}
	inst.spawned = time.Now()
	proc, err := startProcess(name, args, env, logPath)
	if err != nil {
		return nil, err
	}
	inst.proc = proc
	for !probe() {
		select {
		case <-proc.exited:
			proc.stop()
			return nil, fmt.Errorf("process %d stopped before it was ready: %w", id, proc.exitError())
		case <-ctx.Done():
			proc.stop()
			return nil, fmt.Errorf("process %d not ready: %w", id, ctx.Err())
		case <-time.After(probeEvery):
		}
	}
	if l.target == TargetRIE {
		inst.upMS = msSince(inst.spawned, time.Now())
	}
	return inst, nil
}

func (l *launcher) ready(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// result is the outcome of one request.
type result struct {
	sent, done time.Time
	resp       *schema.Response
	// reportedCold is the Lambda reply's "cold": whether the bootstrap
	// initialized for this invocation.
	reportedCold *bool
	kind, msg    string // empty kind: success
	status       int
}

// invoke posts body to the instance and classifies the answer.
func (l *launcher) invoke(ctx context.Context, inst *instance, body []byte) result {
	var res result
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, inst.url, bytes.NewReader(body))
	if err != nil {
		res.kind, res.msg = KindTransport, err.Error()
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res.sent = time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		res.done = time.Now()
		res.kind, res.msg = transportKind(ctx, err), err.Error()
		return res
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	res.done = time.Now()
	res.status = resp.StatusCode
	if err != nil {
		res.kind, res.msg = transportKind(ctx, err), "reading the response: "+err.Error()
		return res
	}
	if resp.StatusCode != http.StatusOK {
		res.kind, res.msg = statusKind(resp.StatusCode), errorMessage(data)
		if l.target == TargetRIE && len(data) == 0 && inst.logFile != "" {
			res.msg = "the emulator answered with no body: see logs/" + inst.logFile
		}
		return res
	}
	if l.target == TargetRIE {
		l.lambdaReply(&res, data)
		return res
	}
	var r schema.Response
	if err := json.Unmarshal(data, &r); err != nil {
		res.kind, res.msg = KindBadReply, err.Error()
		return res
	}
	res.resp = &r
	return res
}

// lambdaReply reads a direct invoke's reply: a schema.Response with cold
// and init_ms, a request error ({"error": ..., "status": 400}) or a
// function error ({"errorType", "errorMessage"}).
func (l *launcher) lambdaReply(res *result, data []byte) {
	var r struct {
		schema.Response
		Cold  *bool `json:"cold"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
		Status       int    `json:"status"`
		ErrorType    string `json:"errorType"`
		ErrorMessage string `json:"errorMessage"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		res.kind, res.msg = KindBadReply, err.Error()
		return
	}
	res.reportedCold = r.Cold
	switch {
	case r.ErrorType != "":
		res.kind, res.msg = KindFunction+r.ErrorType, r.ErrorMessage
	case r.Error != nil:
		res.kind, res.msg, res.status = statusKind(r.Status), r.Error.Message, r.Status
	case r.Images == nil:
		res.kind, res.msg = KindBadReply, "a reply with neither images nor an error"
	default:
		res.resp = &r.Response
	}
}

func statusKind(status int) string {
	if status == http.StatusTooManyRequests {
		return KindBusy
	}
	return fmt.Sprintf("http_%d", status)
}

func transportKind(ctx context.Context, err error) string {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
		return KindTimeout
	}
	return KindTransport
}

// errorMessage returns the message of the server's error body, or the
// start of the body when it is something else.
func errorMessage(data []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func msSince(from, to time.Time) float64 {
	return float64(to.Sub(from).Microseconds()) / 1000
}
