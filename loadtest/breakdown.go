package loadtest

import (
	"math"
	"time"
)

// Names of the parts of a cold start, in the order they happen.
const (
	// PartSpawn: HTTP, from starting the process until its "serving" log
	// line (exec, Go runtime, listener; the bundle load starts alongside);
	// Lambda, from the invoke until the runtime's main starts, which is
	// init_ms before its "init" line (the emulator starts the bootstrap,
	// Go runtime start).
	PartSpawn = "spawn"
	// PartRuntimeInit: Lambda only, the runtime's configuration and
	// clients before the bundle load.
	PartRuntimeInit = "runtime_init"
	// PartOpen: opening the bundle and verifying its hashes.
	PartOpen = "bundle_open"
	// PartLoad: mapping weights, parsing configs and the tokenizer.
	PartLoad = "bundle_load"
	// PartCompile: compiling every bucket's programs, which uploads the
	// weights to the backend.
	PartCompile = "compile"
	// PartWarmup: the warm-up generations.
	PartWarmup = "warmup"
	// PartLoadOther: the rest of the load, inside the process's total_ms
	// but in none of its four stages (a forced GC that hands load-time
	// garbage back, the stages' millisecond rounding).
	PartLoadOther = "load_other"
	// PartReadyWait: HTTP only, from the ready log line until the request
	// is sent (the tool's /readyz polling, as a load balancer's would).
	PartReadyWait = "ready_wait"
	// PartHandshake: Lambda only, from init done until the invocation
	// starts (the runtime asks for the next event, the emulator hands it
	// over).
	PartHandshake = "handshake"
	// PartGeneration: the first generation, the response's
	// timings_ms.total.
	PartGeneration = "first_generation"
	// PartReturn: Lambda, from the end of the invocation until the
	// response arrives (the runtime posts it, the emulator relays it);
	// HTTP, the request's round trip less the generation.
	PartReturn = "return"
)

// Part is one span of a cold start.
type Part struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
}

// Breakdown splits one cold sample's measured total into parts. Each part
// is a span measured on its own (log timestamps, durations the process
// reports, the response's timings); Unaccounted is the total less their
// sum, reported rather than spread over the parts. Missing names the log
// lines that were not seen, whose parts are then in Unaccounted.
type Breakdown struct {
	TotalMS       float64  `json:"total_ms"`
	Parts         []Part   `json:"parts"`
	UnaccountedMS float64  `json:"unaccounted_ms"`
	Missing       []string `json:"missing,omitempty"`
}

// Part returns the part called name, and whether there is one.
func (b *Breakdown) Part(name string) (float64, bool) {
	for _, p := range b.Parts {
		if p.Name == name {
			return p.MS, true
		}
	}
	return 0, false
}

// coldTrace is what one cold sample's breakdown is computed from.
type coldTrace struct {
	target string
	// start is when the cold start began: HTTP, the process start;
	// Lambda, the invoke (the emulator starts the bootstrap on it).
	start time.Time
	// sent and done bound the first request.
	sent, done time.Time
	// generationMS is the response's timings_ms.total, NaN when unknown.
	generationMS float64
	log          processLog
}

func (c coldTrace) breakdown() *Breakdown {
	b := &Breakdown{TotalMS: msSince(c.start, c.done)}
	add := func(name string, v float64) {
		b.Parts = append(b.Parts, Part{Name: name, MS: round3(v)})
	}
	load := c.log.load
	loadParts := func() {
		if load == nil {
			b.Missing = append(b.Missing, "ready/init line (open_ms..warmup_ms)")
			return
		}
		for _, p := range []struct {
			name string
			v    *float64
		}{{PartOpen, load.OpenMS}, {PartLoad, load.LoadMS}, {PartCompile, load.CompileMS}, {PartWarmup, load.WarmupMS}} {
			if p.v != nil {
				add(p.name, *p.v)
			}
		}
		if load.OpenMS != nil && load.LoadMS != nil && load.CompileMS != nil && load.WarmupMS != nil {
			add(PartLoadOther, *load.TotalMS-*load.OpenMS-*load.LoadMS-*load.CompileMS-*load.WarmupMS)
		}
	}
	switch c.target {
	case TargetHTTP:
		// The server starts listening and loading at the same time; the
		// load's own total_ms then runs to the ready line. Whatever lies
		// between the two (the backend's creation) is left unaccounted.
		if s := c.log.serving; s != nil {
			add(PartSpawn, msSince(c.start, s.Time))
		} else {
			b.Missing = append(b.Missing, "serving line")
		}
		loadParts()
		if load != nil {
			add(PartReadyWait, msSince(load.Time, c.sent))
		}
		if !math.IsNaN(c.generationMS) {
			add(PartGeneration, c.generationMS)
			add(PartReturn, msSince(c.sent, c.done)-c.generationMS)
		}
	case TargetRIE:
		ri := c.log.runtimeInit
		if ri != nil {
			// The runtime's init began init_ms before its init line.
			mainStart := ri.Time.Add(-dur(*ri.InitMS))
			add(PartSpawn, msSince(c.start, mainStart))
			add(PartRuntimeInit, *ri.InitMS-*ri.GeneratorMS)
		} else {
			b.Missing = append(b.Missing, "Lambda init line (init_ms, generator_ms)")
		}
		loadParts()
		call := c.log.firstCall
		if call == nil {
			b.Missing = append(b.Missing, "cold invocation line")
		}
		if ri != nil && call != nil {
			callStart := call.Time.Add(-dur(*call.DurationMS))
			add(PartHandshake, msSince(ri.Time, callStart))
		}
		if !math.IsNaN(c.generationMS) {
			add(PartGeneration, c.generationMS)
		}
		if call != nil {
			add(PartReturn, msSince(call.Time, c.done))
		}
	}
	sum := 0.0
	for _, p := range b.Parts {
		sum += p.MS
	}
	b.UnaccountedMS = round3(b.TotalMS - sum)
	return b
}

func dur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// meanBreakdown averages breakdowns part by part (over the samples that
// have the part), keeping the order in which parts first appear.
func meanBreakdown(bs []*Breakdown) *Breakdown {
	if len(bs) == 0 {
		return nil
	}
	type acc struct {
		sum float64
		n   int
	}
	var order []string
	parts := map[string]*acc{}
	out := &Breakdown{}
	for _, b := range bs {
		out.TotalMS += b.TotalMS / float64(len(bs))
		out.UnaccountedMS += b.UnaccountedMS / float64(len(bs))
		for _, p := range b.Parts {
			a := parts[p.Name]
			if a == nil {
				a = &acc{}
				parts[p.Name] = a
				order = append(order, p.Name)
			}
			a.sum += p.MS
			a.n++
		}
	}
	for _, name := range order {
		a := parts[name]
		out.Parts = append(out.Parts, Part{Name: name, MS: round3(a.sum / float64(a.n))})
	}
	out.TotalMS, out.UnaccountedMS = round3(out.TotalMS), round3(out.UnaccountedMS)
	return out
}
