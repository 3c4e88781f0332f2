package loadtest

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testReport is a small run: two cold starts, three warm requests, one
// busy and one failed request.
func testReport() *Report {
	bd := &Breakdown{TotalMS: 600, Parts: []Part{{PartSpawn, 20}, {PartWarmup, 300}, {PartGeneration, 270}}, UnaccountedMS: 10}
	ph := Phase{
		Mode: ModeWarm, Planned: 5, Sent: 5, Priming: 2, Instances: 1,
		Samples: []Sample{
			{Seq: 0, Phase: ModeWarm, AtMS: 0, LatencyMS: 600, Cold: true, Breakdown: bd},
			{Seq: 1, Phase: ModeWarm, AtMS: 700, LatencyMS: 650, Cold: true, Breakdown: bd},
			{Seq: 2, Phase: ModeWarm, AtMS: 1000, LatencyMS: 200},
			{Seq: 3, Phase: ModeWarm, AtMS: 1200, LatencyMS: 300},
			{Seq: 4, Phase: ModeWarm, AtMS: 1500, LatencyMS: 500},
			{Seq: 5, Phase: ModeWarm, AtMS: 1510, LatencyMS: 1, Error: KindBusy, Message: "a generation is already running"},
			{Seq: 6, Phase: ModeWarm, AtMS: 1600, LatencyMS: 3, Error: "http_500", Message: "internal | error\nsecond line"},
		},
	}
	ph.summarize()
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Target:  TargetRIE,
		Config:  ReportConfig{Bundle: "bundle", Modes: []string{ModeWarm}, Requests: 5, Concurrency: 1, TimeoutMS: 60000, Steps: 4},
		WallMS:  2500,
		Phases:  []Phase{ph},
	}
}

func TestSummarizePhase(t *testing.T) {
	p := testReport().Phases[0]
	if p.OK != 5 {
		t.Errorf("ok = %d, want 5", p.OK)
	}
	if p.Errors[KindBusy] != 1 || p.Errors["http_500"] != 1 || len(p.Errors) != 2 {
		t.Errorf("errors = %v, want busy 1, http_500 1", p.Errors)
	}
	if p.Cold == nil || p.Cold.Count != 2 || p.Cold.P50 != 625 {
		t.Errorf("cold = %+v, want 2 samples, p50 625", p.Cold)
	}
	if p.Warm == nil || p.Warm.Count != 3 || p.Warm.P50 != 300 || p.Warm.Max != 500 {
		t.Errorf("warm = %+v, want 3 samples, p50 300, max 500", p.Warm)
	}
	// Three warm requests from 1000 ms to 2000 ms (1500 + 500).
	if p.ThroughputRPS != 3 {
		t.Errorf("throughput = %v, want 3", p.ThroughputRPS)
	}
	if p.ColdStart == nil || p.ColdStart.TotalMS != 600 {
		t.Errorf("cold start mean = %+v", p.ColdStart)
	}
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, testReport()); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("the report is not JSON: %v", err)
	}
	p := back.Phases[0]
	if len(p.Samples) != 7 || p.Warm.P90 != testReport().Phases[0].Warm.P90 || p.Samples[0].Breakdown == nil {
		t.Errorf("round trip lost data: %+v", p)
	}
	for _, key := range []string{`"p99_ms"`, `"throughput_rps"`, `"errors"`, `"unaccounted_ms"`, `"cold_start_mean"`} {
		if !strings.Contains(buf.String(), key) {
			t.Errorf("JSON has no %s", key)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, testReport()); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"# controlfn load test",
		"| warm | cold | 2 | 625.0 |",
		"| warm | warm | 3 | 300.0 | 460.0 | 496.0 | 500.0 | 333.3 | 3.00 |",
		"5 of 5 planned requests sent after 2 priming cold starts; 5 ok; 1 process started",
		"## Cold start, mean of 2 (ms)",
		"| spawn | 20.0 | 3.3% |",
		"| unaccounted | 10.0 | 1.7% |",
		"| **total** | **600.0** | |",
		"| busy | 1 | a generation is already running |",
		`| http_500 | 1 | internal \| error |`,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}

func TestWriteMarkdownNothing(t *testing.T) {
	r := &Report{Target: TargetHTTP, Config: ReportConfig{URL: "http://127.0.0.1:1"}, Phases: []Phase{{Mode: ModeWarm, Planned: 1}}}
	r.Phases[0].summarize()
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "none succeeded") || strings.Contains(buf.String(), "Cold start") {
		t.Errorf("summary of an empty run:\n%s", buf.String())
	}
}

func TestWritePlot(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    *Report
	}{
		{"samples", testReport()},
		{"empty", &Report{Target: TargetHTTP}},
		{"one value", &Report{Target: TargetHTTP, Phases: []Phase{{Samples: []Sample{{LatencyMS: 5}}}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WritePlot(&buf, tt.r); err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(&buf)
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 300 {
				t.Errorf("plot is %v", b)
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteFiles(dir, testReport()); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil || info.Size() == 0 || info.Mode().Perm()&0o044 == 0 {
			t.Errorf("%s: %v, %v", e.Name(), info, err)
		}
	}
	if strings.Join(names, " ") != "latency.png report.json summary.md" {
		t.Errorf("files %v, want exactly latency.png report.json summary.md", names)
	}
}
