package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// Modes.
const (
	ModeCold  = "cold"
	ModeWarm  = "warm"
	ModeMixed = "mixed"
)

// Config is one load-test run.
type Config struct {
	// Target is TargetHTTP or TargetRIE.
	Target string
	// Bundle is the bundle folder the tool's processes load. Either
	// Bundle or URL is set.
	Bundle string
	// URL is a running target's base URL (loopback only): the edge
	// server, or an emulator. Only the warm mode can use it.
	URL string
	// Bin is the controlfn binary to start.
	Bin string
	// RIE is the aws-lambda-rie binary (TargetRIE).
	RIE string
	// Modes run in order, each with its own phase in the report.
	Modes []string
	// Cold is how many cold starts the cold mode measures.
	Cold int
	// Requests and Concurrency shape the warm mode.
	Requests    int
	Concurrency int
	// Arrivals are the mixed mode's request offsets (ParsePattern), and
	// Pattern the text they came from, for the report.
	Arrivals []time.Duration
	Pattern  string
	// IdleTimeout is the mixed mode's model of Lambda reclaiming an idle
	// execution environment: a process idle longer is stopped.
	IdleTimeout time.Duration
	// MaxInstances caps the mixed mode's processes (Lambda's concurrency
	// limit).
	MaxInstances int
	// Timeout bounds the whole run; what it cuts off is reported.
	Timeout time.Duration
	// Request is what every request asks for.
	Request RequestSpec
	// LogDir receives each process's output; "" keeps none.
	LogDir string
}

func (c *Config) check() error {
	switch c.Target {
	case TargetHTTP, TargetRIE:
	default:
		return fmt.Errorf("target %q: want %s or %s", c.Target, TargetHTTP, TargetRIE)
	}
	if (c.Bundle == "") == (c.URL == "") {
		return errors.New("set exactly one of the bundle (the tool starts the processes) and the URL of a running target")
	}
	if len(c.Modes) == 0 {
		return errors.New("no mode")
	}
	for _, m := range c.Modes {
		switch m {
		case ModeCold, ModeMixed:
			if c.URL != "" {
				return fmt.Errorf("mode %s starts processes: it needs a bundle, not a URL", m)
			}
		case ModeWarm:
		default:
			return fmt.Errorf("mode %q: want %s, %s or %s", m, ModeCold, ModeWarm, ModeMixed)
		}
	}
	if slices.Contains(c.Modes, ModeCold) && c.Cold < 1 {
		return errors.New("cold mode needs at least one cold start")
	}
	if slices.Contains(c.Modes, ModeWarm) && (c.Requests < 1 || c.Concurrency < 1) {
		return errors.New("warm mode needs at least one request and a concurrency of at least 1")
	}
	if slices.Contains(c.Modes, ModeMixed) {
		if len(c.Arrivals) == 0 {
			return errors.New("mixed mode needs an arrival pattern")
		}
		if c.MaxInstances < 1 || c.IdleTimeout <= 0 {
			return errors.New("mixed mode needs max instances >= 1 and a positive idle timeout")
		}
	}
	if c.Bundle != "" {
		if c.Bin == "" {
			return errors.New("no controlfn binary to start")
		}
		if c.Target == TargetRIE && c.RIE == "" {
			return errors.New("no aws-lambda-rie binary")
		}
	}
	if c.Timeout <= 0 {
		return errors.New("the timeout must be positive")
	}
	return nil
}

// Run runs the modes in order against the target and returns the report.
// It returns an error only when it cannot run at all (bad configuration,
// no request body); failed requests, processes that do not start and the
// timeout are findings, recorded in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	body, err := cfg.Request.Body()
	if err != nil {
		return nil, err
	}
	l := &launcher{
		target: cfg.Target,
		bin:    cfg.Bin,
		rie:    cfg.RIE,
		logDir: cfg.LogDir,
		env:    os.Environ(),
		client: newClient(max(cfg.Concurrency, cfg.MaxInstances)),
	}
	defer l.client.CloseIdleConnections()
	if cfg.URL != "" {
		if l.external, err = loopbackURL(cfg.URL); err != nil {
			return nil, err
		}
	} else if l.bundle, err = filepath.Abs(cfg.Bundle); err != nil {
		return nil, fmt.Errorf("bundle path: %w", err)
	}
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("creating the log folder: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &runner{cfg: cfg, l: l, body: body, start: time.Now()}
	rep := &Report{
		Started: r.start.UTC(),
		Target:  cfg.Target,
		Config:  reportConfig(cfg),
	}
	for _, mode := range cfg.Modes {
		ph := r.phase(ctx, mode)
		rep.Phases = append(rep.Phases, ph)
	}
	rep.WallMS = msSince(r.start, time.Now())
	return rep, nil
}

// runner holds one run's state.
type runner struct {
	cfg   Config
	l     *launcher
	body  []byte
	start time.Time
}

// recorder collects one phase's samples from concurrent requests and
// the instances to stop at its end.
type recorder struct {
	mu      sync.Mutex
	samples []*Sample
	pending sync.WaitGroup // instance stops still finishing breakdowns
}

func (rc *recorder) add(s *Sample) {
	rc.mu.Lock()
	s.Seq = len(rc.samples)
	rc.samples = append(rc.samples, s)
	rc.mu.Unlock()
}

// live is an instance during a phase, with the cold sample whose
// breakdown its log completes when it stops.
type live struct {
	*instance
	cold  *Sample
	trace *coldTrace
	// lastDone is when it last finished a request (mixed mode).
	lastDone time.Time
}

func (r *runner) phase(ctx context.Context, mode string) Phase {
	ph := Phase{Mode: mode}
	rc := &recorder{}
	began := time.Now()
	switch mode {
	case ModeCold:
		ph.Planned = r.cfg.Cold
		r.cold(ctx, rc, &ph)
	case ModeWarm:
		ph.Planned = r.cfg.Requests
		r.warm(ctx, rc, &ph)
	case ModeMixed:
		ph.Planned = len(r.cfg.Arrivals)
		r.mixed(ctx, rc, &ph)
	}
	rc.pending.Wait()
	ph.WallMS = msSince(began, time.Now())
	switch err := ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		ph.Stopped = fmt.Sprintf("the run's timeout (%s) ended this phase", r.cfg.Timeout)
	case err != nil:
		ph.Stopped = "interrupted"
	}
	ph.Samples = make([]Sample, len(rc.samples))
	for i, s := range rc.samples {
		ph.Samples[i] = *s
	}
	ph.summarize()
	return ph
}

// coldRequest starts an instance and sends it its first request, which
// is recorded as a cold sample. It returns nil when the start failed
// (recorded as a "start" error).
func (r *runner) coldRequest(ctx context.Context, rc *recorder, label string) *live {
	asked := time.Now()
	inst, err := r.l.launch(ctx, label)
	if err != nil {
		kind := KindStart
		if ctx.Err() != nil {
			kind = KindTimeout
		}
		rc.add(&Sample{Phase: label, Instance: -1, AtMS: msSince(r.start, asked), LatencyMS: msSince(asked, time.Now()),
			Cold: true, Error: kind, Message: err.Error()})
		return nil
	}
	res := r.l.invoke(ctx, inst, r.body)
	start := inst.spawned
	if r.cfg.Target == TargetRIE && !res.sent.IsZero() {
		// The emulator's own start is not part of a Lambda cold start:
		// the invoke is.
		start = res.sent
	}
	s := r.sample(label, inst, res, start)
	s.Cold = true
	if inst.upMS > 0 {
		up := inst.upMS
		s.EmulatorStartMS = &up
	}
	rc.add(s)
	lv := &live{instance: inst, cold: s, lastDone: res.done}
	if res.kind == "" {
		gen := math.NaN()
		if t, ok := res.resp.TimingsMS[schema.StageTotal]; ok {
			gen = t
		}
		lv.trace = &coldTrace{target: r.cfg.Target, start: start, sent: res.sent, done: res.done, generationMS: gen}
	}
	return lv
}

// sample records a result; start is when its latency begins.
func (r *runner) sample(label string, inst *instance, res result, start time.Time) *Sample {
	s := &Sample{
		Phase:     label,
		Instance:  inst.id,
		AtMS:      msSince(r.start, start),
		LatencyMS: msSince(start, res.done),
		Error:     res.kind,
		Message:   res.msg,
		Status:    res.status,
		Reported:  res.reportedCold,
	}
	if res.sent.IsZero() {
		s.LatencyMS = 0
	}
	if res.resp != nil {
		s.TimingsMS = res.resp.TimingsMS
	}
	return s
}

// stop stops an instance's process in the background and then completes
// its cold sample's breakdown from the process's log.
func (r *runner) stop(rc *recorder, lv *live) {
	if lv.proc == nil {
		return
	}
	rc.pending.Add(1)
	go func() {
		defer rc.pending.Done()
		lv.proc.stop()
		if lv.trace == nil {
			return
		}
		lv.trace.log = lv.proc.log.snapshot()
		b := lv.trace.breakdown()
		rc.mu.Lock()
		lv.cold.Breakdown = b
		rc.mu.Unlock()
	}()
}

// cold measures cfg.Cold cold starts one after another, each in a
// process of its own, so that none competes with another for the CPU.
func (r *runner) cold(ctx context.Context, rc *recorder, ph *Phase) {
	for range r.cfg.Cold {
		if ctx.Err() != nil {
			return
		}
		ph.Sent++
		if lv := r.coldRequest(ctx, rc, ModeCold); lv != nil {
			ph.Instances++
			r.stop(rc, lv)
			rc.pending.Wait() // the next start must not overlap this stop
		}
	}
}

// warm primes the instances (one for the HTTP server, one per worker
// under the emulator; see the package documentation), then sends
// cfg.Requests requests from cfg.Concurrency workers.
func (r *runner) warm(ctx context.Context, rc *recorder, ph *Phase) {
	var insts []*live
	defer func() {
		for _, lv := range insts {
			r.stop(rc, lv)
		}
	}()
	switch {
	case r.l.external != nil:
		insts = append(insts, &live{instance: r.l.externalInstance()})
	default:
		n := 1
		if r.cfg.Target == TargetRIE {
			n = r.cfg.Concurrency
		}
		for range n {
			if ctx.Err() != nil {
				return
			}
			ph.Priming++
			lv := r.coldRequest(ctx, rc, ModeWarm)
			if lv == nil {
				return // the target does not start: the error is recorded
			}
			ph.Instances++
			insts = append(insts, lv)
		}
	}
	// Each worker sends a fixed share of the requests, one after another:
	// with a shared queue, a worker whose requests the server refuses at
	// once (429) would take nearly all of them.
	sent := make([]int, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range r.cfg.Concurrency {
		lv := insts[w%len(insts)]
		share := r.cfg.Requests / r.cfg.Concurrency
		if w < r.cfg.Requests%r.cfg.Concurrency {
			share++
		}
		wg.Go(func() {
			for range share {
				if ctx.Err() != nil {
					return
				}
				sent[w]++
				res := r.l.invoke(ctx, lv.instance, r.body)
				s := r.sample(ModeWarm, lv.instance, res, res.sent)
				// A bootstrap that crashed is initialized again by the
				// emulator: that request was a cold start after all.
				s.Cold = res.reportedCold != nil && *res.reportedCold
				rc.add(s)
			}
		})
	}
	wg.Wait()
	for _, n := range sent {
		ph.Sent += n
	}
}

// pool is the mixed mode's set of processes, scaled the way Lambda
// scales execution environments.
type pool struct {
	mu   sync.Mutex
	idle []*live // most recently used last
	n    int     // processes alive or starting
}

// mixed sends requests at the pattern's offsets; each goes to an idle
// process, or starts a new one, or is throttled at MaxInstances.
// Processes idle longer than IdleTimeout are stopped before an arrival
// looks for one.
func (r *runner) mixed(ctx context.Context, rc *recorder, ph *Phase) {
	p := &pool{}
	var wg sync.WaitGroup
	began := time.Now()
	for _, off := range r.cfg.Arrivals {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(began.Add(off))):
		}
		if ctx.Err() != nil {
			break
		}
		ph.Sent++
		now := time.Now()
		p.mu.Lock()
		keep := p.idle[:0]
		for _, lv := range p.idle {
			if now.Sub(lv.lastDone) > r.cfg.IdleTimeout {
				p.n--
				ph.Evictions++
				r.stop(rc, lv)
			} else {
				keep = append(keep, lv)
			}
		}
		p.idle = keep
		var lv *live
		cold := false
		switch {
		case len(p.idle) > 0:
			lv = p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
		case p.n < r.cfg.MaxInstances:
			p.n++
			ph.Instances++
			cold = true
		}
		p.mu.Unlock()
		if lv == nil && !cold {
			rc.add(&Sample{Phase: ModeMixed, Instance: -1, AtMS: msSince(r.start, now), Error: KindThrottled,
				Message: fmt.Sprintf("all %d processes busy", r.cfg.MaxInstances)})
			continue
		}
		wg.Go(func() {
			kind := ""
			if cold {
				if lv = r.coldRequest(ctx, rc, ModeMixed); lv != nil {
					kind = lv.cold.Error
				}
			} else {
				res := r.l.invoke(ctx, lv.instance, r.body)
				s := r.sample(ModeMixed, lv.instance, res, res.sent)
				s.Cold = res.reportedCold != nil && *res.reportedCold
				rc.add(s)
				lv.lastDone, kind = res.done, res.kind
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			switch {
			case lv == nil: // it did not start
				p.n--
			case kind == KindTransport: // it died: Lambda would replace it too
				p.n--
				r.stop(rc, lv)
			default:
				p.idle = append(p.idle, lv)
			}
		})
	}
	wg.Wait()
	for _, lv := range p.idle {
		r.stop(rc, lv)
	}
}
