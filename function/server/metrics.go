package server

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBuckets are histogram upper bounds in seconds, from a fast stage
// (tokenize: milliseconds) to a CPU generation (minutes).
var latencyBuckets = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}

// maxStages bounds the stage label values: stage names come from the
// Generator, and a time series per distinct name must not grow unbounded.
const maxStages = 32

type histogram struct {
	counts [len(latencyBuckets)]uint64 // per bucket, not cumulative
	count  uint64
	sum    float64
}

func (h *histogram) observe(seconds float64) {
	// The first bound >= seconds; above the last, only +Inf (count) holds it.
	if i, _ := slices.BinarySearch(latencyBuckets[:], seconds); i < len(latencyBuckets) {
		h.counts[i]++
	}
	h.count++
	h.sum += seconds
}

// metrics are the counters /metrics exposes, written in the Prometheus
// text format by hand to keep the function free of a client library.
type metrics struct {
	start        time.Time
	httpInFlight atomic.Int64
	genInFlight  atomic.Int64

	mu       sync.Mutex
	requests map[requestKey]uint64
	errors   map[string]uint64
	// generate is the whole generate route per start ("cold" for the
	// first generation of the process, "warm" after).
	generate map[string]*histogram
	stages   map[string]*histogram
}

type requestKey struct {
	route string
	code  int
}

func newMetrics(start time.Time) *metrics {
	return &metrics{
		start:    start,
		requests: make(map[requestKey]uint64),
		errors:   make(map[string]uint64),
		generate: make(map[string]*histogram),
		stages:   make(map[string]*histogram),
	}
}

func (m *metrics) request(route string, code int, errKind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{route, code}]++
	if errKind != "" {
		m.errors[errKind]++
	}
}

// generation records a generation's total time and, when it succeeded,
// its stage timings (milliseconds).
func (m *metrics) generation(cold bool, total time.Duration, stagesMS map[string]float64) {
	start := "warm"
	if cold {
		start = "cold"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	hist(m.generate, start, math.MaxInt).observe(total.Seconds())
	for stage, msec := range stagesMS {
		if h := hist(m.stages, stage, maxStages); h != nil && !math.IsNaN(msec) && !math.IsInf(msec, 0) {
			h.observe(msec / 1000)
		}
	}
}

// hist returns the histogram for label, creating it while the map has
// fewer than limit entries; nil beyond.
func hist(hs map[string]*histogram, label string, limit int) *histogram {
	h := hs[label]
	if h == nil && len(hs) < limit {
		h = new(histogram)
		hs[label] = h
	}
	return h
}

// write renders every metric, series sorted so that scrapes diff cleanly.
func (m *metrics) write(w io.Writer, ready bool, buildID string, now time.Time) error {
	b := bufio.NewWriter(w)
	header := func(name, typ, help string) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}

	header("controlfn_up", "gauge", "1 while the process serves.")
	b.WriteString("controlfn_up 1\n")
	header("controlfn_ready", "gauge", "1 once warm-up has finished.")
	fmt.Fprintf(b, "controlfn_ready %d\n", boolInt(ready))
	if buildID != "" {
		header("controlfn_build_info", "gauge", "The loaded bundle's build id.")
		fmt.Fprintf(b, "controlfn_build_info{build_id=%s} 1\n", quoteLabel(buildID))
	}
	header("controlfn_process_start_time_seconds", "gauge", "Unix time the handler was created.")
	fmt.Fprintf(b, "controlfn_process_start_time_seconds %s\n", formatFloat(float64(m.start.UnixMicro())/1e6))
	header("controlfn_uptime_seconds", "gauge", "Seconds since the handler was created.")
	fmt.Fprintf(b, "controlfn_uptime_seconds %s\n", formatFloat(now.Sub(m.start).Seconds()))
	header("controlfn_http_requests_in_flight", "gauge", "HTTP requests being served.")
	fmt.Fprintf(b, "controlfn_http_requests_in_flight %d\n", m.httpInFlight.Load())
	header("controlfn_generations_in_flight", "gauge", "Generations running (at most 1).")
	fmt.Fprintf(b, "controlfn_generations_in_flight %d\n", m.genInFlight.Load())

	m.mu.Lock()
	defer m.mu.Unlock()

	header("controlfn_http_requests_total", "counter", "HTTP requests by route and status code (499: client went away).")
	keys := slices.SortedFunc(maps.Keys(m.requests), func(a, b requestKey) int {
		if c := strings.Compare(a.route, b.route); c != 0 {
			return c
		}
		return a.code - b.code
	})
	for _, k := range keys {
		fmt.Fprintf(b, "controlfn_http_requests_total{route=%s,code=\"%d\"} %d\n", quoteLabel(k.route), k.code, m.requests[k])
	}
	header("controlfn_errors_total", "counter", "Failed requests by kind.")
	for _, kind := range slices.Sorted(maps.Keys(m.errors)) {
		fmt.Fprintf(b, "controlfn_errors_total{kind=%s} %d\n", quoteLabel(kind), m.errors[kind])
	}
	header("controlfn_generate_duration_seconds", "histogram",
		`Generate requests that ran a generation, end to end, by start ("cold": the first of the process).`)
	writeHistograms(b, "controlfn_generate_duration_seconds", "start", m.generate)
	header("controlfn_stage_duration_seconds", "histogram", "Pipeline stage wall time of successful generations.")
	writeHistograms(b, "controlfn_stage_duration_seconds", "stage", m.stages)
	return b.Flush()
}

func writeHistograms(b *bufio.Writer, name, label string, hs map[string]*histogram) {
	for _, v := range slices.Sorted(maps.Keys(hs)) {
		h, lv := hs[v], quoteLabel(v)
		var cum uint64
		for i, le := range latencyBuckets {
			cum += h.counts[i]
			fmt.Fprintf(b, "%s_bucket{%s=%s,le=\"%s\"} %d\n", name, label, lv, formatFloat(le), cum)
		}
		fmt.Fprintf(b, "%s_bucket{%s=%s,le=\"+Inf\"} %d\n", name, label, lv, h.count)
		fmt.Fprintf(b, "%s_sum{%s=%s} %s\n", name, label, lv, formatFloat(h.sum))
		fmt.Fprintf(b, "%s_count{%s=%s} %d\n", name, label, lv, h.count)
	}
}

// quoteLabel quotes a label value with the three escapes the text format
// defines.
func quoteLabel(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
