package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// Files a run writes into its output folder.
const (
	FileJSON    = "report.json"
	FilePlot    = "latency.png"
	FileSummary = "summary.md"
	DirLogs     = "logs"
)

// Report is the result of a run: the JSON written to FileJSON.
type Report struct {
	Started time.Time    `json:"started"`
	Target  string       `json:"target"`
	Config  ReportConfig `json:"config"`
	WallMS  float64      `json:"wall_ms"`
	Phases  []Phase      `json:"phases"`
}

// ReportConfig is the part of the Config a reader needs to interpret
// the numbers.
type ReportConfig struct {
	Bundle        string   `json:"bundle,omitempty"`
	URL           string   `json:"url,omitempty"`
	Modes         []string `json:"modes"`
	Cold          int      `json:"cold,omitempty"`
	Requests      int      `json:"requests,omitempty"`
	Concurrency   int      `json:"concurrency,omitempty"`
	Pattern       string   `json:"pattern,omitempty"`
	IdleTimeoutMS float64  `json:"idle_timeout_ms,omitempty"`
	MaxInstances  int      `json:"max_instances,omitempty"`
	TimeoutMS     float64  `json:"timeout_ms"`
	Steps         int      `json:"num_inference_steps"`
}

func reportConfig(c Config) ReportConfig {
	rc := ReportConfig{Bundle: c.Bundle, URL: c.URL, Modes: c.Modes, TimeoutMS: ms64(c.Timeout), Steps: c.Request.Steps}
	for _, m := range c.Modes {
		switch m {
		case ModeCold:
			rc.Cold = c.Cold
		case ModeWarm:
			rc.Requests, rc.Concurrency = c.Requests, c.Concurrency
		case ModeMixed:
			rc.Pattern, rc.IdleTimeoutMS, rc.MaxInstances = c.Pattern, ms64(c.IdleTimeout), c.MaxInstances
		}
	}
	return rc
}

func ms64(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Phase is one mode's results.
type Phase struct {
	Mode string `json:"mode"`
	// Planned requests, and those Sent before the timeout (if any).
	Planned int `json:"planned"`
	Sent    int `json:"sent"`
	// Stopped says why the phase ended early; empty when it did not.
	Stopped string `json:"stopped,omitempty"`
	// Priming is the cold requests the warm mode sent to load its
	// processes before the Planned ones; they are in Samples, marked cold.
	Priming int `json:"priming,omitempty"`
	// Instances is the processes started (or tried); Evictions those
	// the mixed mode stopped for idling.
	Instances int     `json:"instances"`
	Evictions int     `json:"evictions,omitempty"`
	WallMS    float64 `json:"wall_ms"`
	OK        int     `json:"ok"`
	// Errors counts failed requests by kind (KindBusy, "http_500"...).
	Errors map[string]int `json:"errors"`
	// ThroughputRPS is successful warm requests per second, from the
	// first warm request sent to the last warm response (every successful
	// request when the phase has no warm one).
	ThroughputRPS float64 `json:"throughput_rps"`
	// Latency summarizes every successful request; Warm and Cold split it.
	Latency *Summary `json:"latency,omitempty"`
	Warm    *Summary `json:"warm,omitempty"`
	Cold    *Summary `json:"cold,omitempty"`
	// ColdStart is the cold samples' breakdowns averaged part by part.
	ColdStart *Breakdown `json:"cold_start_mean,omitempty"`
	Samples   []Sample   `json:"samples"`
}

// Sample is one request.
type Sample struct {
	Seq   int    `json:"seq"`
	Phase string `json:"phase"`
	// Instance numbers the process that served it (-1: none did).
	Instance int `json:"instance"`
	// AtMS is when its latency began, from the start of the run: for a
	// cold HTTP sample the process start, else the request.
	AtMS      float64 `json:"at_ms"`
	LatencyMS float64 `json:"latency_ms"`
	Cold      bool    `json:"cold"`
	// Error is the kind of failure; empty on success.
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	Status  int    `json:"status,omitempty"`
	// Reported is the Lambda reply's own "cold".
	Reported  *bool          `json:"reported_cold,omitempty"`
	TimingsMS schema.Timings `json:"timings_ms,omitempty"`
	Breakdown *Breakdown     `json:"breakdown,omitempty"`
	// EmulatorStartMS is how long the emulator took to listen before
	// this cold start's invoke; not part of LatencyMS.
	EmulatorStartMS *float64 `json:"emulator_start_ms,omitempty"`
}

// OK reports whether the request succeeded.
func (s Sample) OK() bool { return s.Error == "" }

// summarize fills the phase's statistics from its samples.
func (p *Phase) summarize() {
	p.Errors = map[string]int{}
	var all, warm, cold []float64
	var bds []*Breakdown
	first, last := math.Inf(1), math.Inf(-1)
	for _, s := range p.Samples {
		if !s.OK() {
			p.Errors[s.Error]++
			continue
		}
		p.OK++
		all = append(all, s.LatencyMS)
		if s.Cold {
			cold = append(cold, s.LatencyMS)
			if s.Breakdown != nil {
				bds = append(bds, s.Breakdown)
			}
			continue
		}
		warm = append(warm, s.LatencyMS)
		first, last = math.Min(first, s.AtMS), math.Max(last, s.AtMS+s.LatencyMS)
	}
	p.Latency, p.Warm, p.Cold = Summarize(all), Summarize(warm), Summarize(cold)
	p.ColdStart = meanBreakdown(bds)
	n := len(warm)
	if n == 0 {
		for _, s := range p.Samples {
			if s.OK() {
				first, last = math.Min(first, s.AtMS), math.Max(last, s.AtMS+s.LatencyMS)
			}
		}
		n = len(all)
	}
	if n > 0 && last > first {
		p.ThroughputRPS = round3(float64(n) / ((last - first) / 1000))
	}
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing the JSON report: %w", err)
	}
	return nil
}

// WriteMarkdown writes a short human summary: latencies per phase, the
// mean cold-start breakdown, errors by kind.
func WriteMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# controlfn load test\n\n")
	what := r.Config.Bundle
	if what == "" {
		what = r.Config.URL
	}
	fmt.Fprintf(&b, "Target **%s** (%s), %d inference steps, started %s, %.1f s in all.\n\n",
		r.Target, what, r.Config.Steps, r.Started.Format(time.RFC3339), r.WallMS/1000)

	fmt.Fprintf(&b, "## Latency (ms)\n\n")
	fmt.Fprintf(&b, "| phase | requests | n | p50 | p90 | p99 | max | mean | throughput/s |\n")
	fmt.Fprintf(&b, "|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.Phases {
		rows := []struct {
			name string
			s    *Summary
		}{{"cold", p.Cold}, {"warm", p.Warm}}
		for _, row := range rows {
			if row.s == nil {
				continue
			}
			tput := ""
			if row.name == "warm" || p.Warm == nil {
				tput = fmt.Sprintf("%.2f", p.ThroughputRPS)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %s |\n",
				p.Mode, row.name, row.s.Count, row.s.P50, row.s.P90, row.s.P99, row.s.Max, row.s.Mean, tput)
		}
		if p.Latency == nil {
			fmt.Fprintf(&b, "| %s | none succeeded | 0 | | | | | | |\n", p.Mode)
		}
	}
	b.WriteString("\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "- **%s**: %d of %d planned requests sent", p.Mode, p.Sent, p.Planned)
		if p.Priming > 0 {
			fmt.Fprintf(&b, " after %d priming cold %s", p.Priming, plural(p.Priming, "start", "starts"))
		}
		fmt.Fprintf(&b, "; %d ok; %d %s started", p.OK, p.Instances, plural(p.Instances, "process", "processes"))
		if p.Evictions > 0 {
			fmt.Fprintf(&b, ", %d stopped for idling", p.Evictions)
		}
		fmt.Fprintf(&b, ".")
		if p.Stopped != "" {
			fmt.Fprintf(&b, " Stopped early: %s.", p.Stopped)
		}
		b.WriteString("\n")
	}

	var bds []*Breakdown
	for _, p := range r.Phases {
		for _, s := range p.Samples {
			if s.Breakdown != nil {
				bds = append(bds, s.Breakdown)
			}
		}
	}
	if mean := meanBreakdown(bds); mean != nil {
		fmt.Fprintf(&b, "\n## Cold start, mean of %d (ms)\n\n", len(bds))
		fmt.Fprintf(&b, "| part | ms | share |\n|---|--:|--:|\n")
		for _, part := range mean.Parts {
			fmt.Fprintf(&b, "| %s | %.1f | %s |\n", part.Name, part.MS, share(part.MS, mean.TotalMS))
		}
		fmt.Fprintf(&b, "| unaccounted | %.1f | %s |\n", mean.UnaccountedMS, share(mean.UnaccountedMS, mean.TotalMS))
		fmt.Fprintf(&b, "| **total** | **%.1f** | |\n", mean.TotalMS)
		fmt.Fprintf(&b, "\nPer cold start: ")
		var per []string
		for _, bd := range bds {
			s := fmt.Sprintf("%.0f ms (unaccounted %s)", bd.TotalMS, share(bd.UnaccountedMS, bd.TotalMS))
			if len(bd.Missing) > 0 {
				s += ", missing " + strings.Join(bd.Missing, ", ")
			}
			per = append(per, s)
		}
		b.WriteString(strings.Join(per, "; ") + ".\n")
	}

	errs := map[string]int{}
	example := map[string]string{}
	for _, p := range r.Phases {
		for _, s := range p.Samples {
			if !s.OK() {
				errs[s.Error]++
				if example[s.Error] == "" {
					example[s.Error] = s.Message
				}
			}
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\n## Errors\n\n| kind | count | first message |\n|---|--:|---|\n")
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			msg := strings.ReplaceAll(firstLine(example[k]), "|", `\|`)
			fmt.Fprintf(&b, "| %s | %d | %s |\n", k, errs[k], msg)
		}
	} else {
		fmt.Fprintf(&b, "\nNo errors.\n")
	}
	fmt.Fprintf(&b, "\nFiles: `%s` (every sample), `%s` (latency over time, cold starts marked; histogram), `%s/` (process output).\n",
		FileJSON, FilePlot, DirLogs)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing the summary: %w", err)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func share(part, total float64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*part/total)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// WriteFiles writes FileJSON, FileSummary and FilePlot into dir.
func WriteFiles(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the output folder: %w", err)
	}
	writers := []struct {
		name  string
		write func(io.Writer, *Report) error
	}{{FileJSON, WriteJSON}, {FileSummary, WriteMarkdown}, {FilePlot, WritePlot}}
	for _, wr := range writers {
		if err := writeFile(filepath.Join(dir, wr.name), func(w io.Writer) error { return wr.write(w, r) }); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes path through a temporary file and a rename, so that a
// reader never sees half a report.
func writeFile(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes it private
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
