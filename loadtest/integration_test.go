package loadtest

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The integration tests build the real binary, compile the tiny demo
// bundle and drive it: under the Lambda Runtime Interface Emulator (found
// through CONTROLFN_RIE or PATH; missing, it skips the test, or fails it
// when CI is set) and as the HTTP server.

// system builds controlfn and the tiny demo bundle into a temporary
// folder and returns the binary and the bundle.
func system(t *testing.T) (bin, bundle string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	dir := t.TempDir()
	bin = filepath.Join(dir, "controlfn")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build controlfn: %v", err)
	}
	build := exec.Command(goCmd, "build", "-o", bin, "github.com/controlfn/controlfn/cmd/controlfn")
	// The fast matmul kernels, as the Makefile builds them.
	build.Env = append(os.Environ(), "GOEXPERIMENT=simd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building controlfn: %v\n%s", err, out)
	}
	model, bundle := filepath.Join(dir, "model"), filepath.Join(dir, "bundle")
	for _, args := range [][]string{
		{"demo-model", "--out", model},
		{"compile", "--model", model, "--size", "64x64", "--out", bundle},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("controlfn %v: %v\n%s", args, err, out)
		}
	}
	return bin, bundle
}

func findRIE(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvRIE); p != "" {
		return p
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	msg := "aws-lambda-rie not found: set " + EnvRIE + " or put it on PATH " +
		"(go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@latest)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func TestIntegration(t *testing.T) {
	rie := findRIE(t)
	bin, bundle := system(t)
	base := func(target string, out string) Config {
		return Config{
			Target: target, Bundle: bundle, Bin: bin, RIE: rie, Timeout: 2 * time.Minute,
			Request: RequestSpec{Prompt: "a red cube", Steps: 2, Seed: 1},
			LogDir:  filepath.Join(out, DirLogs),
		}
	}

	t.Run("rie cold and warm", func(t *testing.T) {
		out := t.TempDir()
		cfg := base(TargetRIE, out)
		cfg.Modes, cfg.Cold, cfg.Requests, cfg.Concurrency = []string{ModeCold, ModeWarm}, 2, 5, 1
		rep := run(t, cfg, out)
		cold, warm := rep.Phases[0], rep.Phases[1]
		expect(t, cold, 2, 2, 0)
		expect(t, warm, 5, 6, 0)
		if warm.Priming != 1 || warm.Instances != 1 || warm.Warm == nil || warm.Warm.Count != 5 {
			t.Errorf("warm phase: priming %d, instances %d, warm %+v; want 1, 1, 5 warm samples", warm.Priming, warm.Instances, warm.Warm)
		}
		for _, ph := range rep.Phases {
			for _, s := range ph.Samples {
				if s.Reported == nil || *s.Reported != s.Cold {
					t.Errorf("%s sample %d: cold %v, the function says %v", ph.Mode, s.Seq, s.Cold, s.Reported)
				}
			}
		}
		checkColdStarts(t, rep, []string{PartSpawn, PartRuntimeInit, PartOpen, PartLoad, PartCompile, PartWarmup,
			PartLoadOther, PartHandshake, PartGeneration, PartReturn})
		// Cold starts are visibly slower: each pays the load and warm-up.
		if cold.Cold.Min <= warm.Warm.P50 {
			t.Errorf("fastest cold start %.1f ms is not slower than the warm median %.1f ms", cold.Cold.Min, warm.Warm.P50)
		}
	})

	t.Run("http cold and busy warm", func(t *testing.T) {
		out := t.TempDir()
		cfg := base(TargetHTTP, out)
		cfg.Modes, cfg.Cold, cfg.Requests, cfg.Concurrency = []string{ModeCold, ModeWarm}, 1, 4, 2
		rep := run(t, cfg, out)
		expect(t, rep.Phases[0], 1, 1, 0)
		warm := rep.Phases[1]
		// Two clients on one process: some requests find it busy (429),
		// whichever they are; nothing else may fail.
		if warm.Sent != 4 || warm.OK+warm.Errors[KindBusy] != 5 || len(warm.Errors) > 1 || warm.OK < 3 {
			t.Errorf("warm phase: sent %d, ok %d, errors %v; want 4 sent, the rest busy, at least 3 ok", warm.Sent, warm.OK, warm.Errors)
		}
		checkColdStarts(t, rep, []string{PartSpawn, PartOpen, PartLoad, PartCompile, PartWarmup, PartLoadOther,
			PartReadyWait, PartGeneration, PartReturn})
	})

	t.Run("rie mixed", func(t *testing.T) {
		// Two arrivals 50 ms apart with one process allowed: the second
		// is throttled while the first starts. After a 2 s gap, with a
		// 300 ms idle timeout, the process has been reclaimed: the third
		// arrival is a second cold start.
		out := t.TempDir()
		cfg := base(TargetRIE, out)
		cfg.Modes, cfg.Pattern = []string{ModeMixed}, "2@50ms,gap 2s,1"
		cfg.IdleTimeout, cfg.MaxInstances = 300*time.Millisecond, 1
		var err error
		if cfg.Arrivals, err = ParsePattern(cfg.Pattern); err != nil {
			t.Fatal(err)
		}
		rep := run(t, cfg, out)
		ph := rep.Phases[0]
		expect(t, ph, 3, 2, 1)
		if ph.Errors[KindThrottled] != 1 || ph.Instances != 2 || ph.Evictions != 1 || ph.Cold == nil || ph.Cold.Count != 2 {
			t.Errorf("mixed phase: errors %v, instances %d, evictions %d, cold %+v; want 1 throttled, 2 processes, 1 eviction, 2 cold starts",
				ph.Errors, ph.Instances, ph.Evictions, ph.Cold)
		}
	})
}

// run runs cfg, writes the report files into out and checks they are
// there.
func run(t *testing.T, cfg Config, out string) *Report {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			summary, _ := os.ReadFile(filepath.Join(out, FileSummary))
			t.Logf("summary:\n%s", summary)
		}
	})
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(out, rep); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{FileJSON, FilePlot, FileSummary} {
		if st, err := os.Stat(filepath.Join(out, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if len(rep.Phases) != len(cfg.Modes) {
		t.Fatalf("%d phases for modes %v", len(rep.Phases), cfg.Modes)
	}
	return rep
}

// expect checks a phase's counts.
func expect(t *testing.T, ph Phase, sent, ok, failed int) {
	t.Helper()
	n := 0
	for _, c := range ph.Errors {
		n += c
	}
	if ph.Sent != sent || ph.OK != ok || n != failed || ph.Stopped != "" {
		t.Errorf("%s phase: sent %d, ok %d, errors %v, stopped %q; want %d sent, %d ok, %d errors",
			ph.Mode, ph.Sent, ph.OK, ph.Errors, ph.Stopped, sent, ok, failed)
		for _, s := range ph.Samples {
			if !s.OK() {
				t.Logf("sample %d: %s: %s", s.Seq, s.Error, s.Message)
			}
		}
	}
}

// checkColdStarts checks every cold sample's breakdown: all the parts
// are there and positive, and they cover the measured total to within
// 10% (what they leave is reported as unaccounted, never forced).
func checkColdStarts(t *testing.T, rep *Report, parts []string) {
	t.Helper()
	n := 0
	for _, ph := range rep.Phases {
		for _, s := range ph.Samples {
			if !s.Cold || !s.OK() {
				continue
			}
			n++
			b := s.Breakdown
			name := fmt.Sprintf("%s sample %d", ph.Mode, s.Seq)
			if b == nil {
				t.Errorf("%s: cold with no breakdown", name)
				continue
			}
			if len(b.Missing) > 0 {
				t.Errorf("%s: log lines missing: %v", name, b.Missing)
			}
			if math.Abs(b.TotalMS-s.LatencyMS) > 1e-3 {
				t.Errorf("%s: breakdown total %.3f ms, latency %.3f ms", name, b.TotalMS, s.LatencyMS)
			}
			sum := 0.0
			for _, want := range parts {
				v, ok := b.Part(want)
				if !ok {
					t.Errorf("%s: no %s part", name, want)
				}
				// Millisecond rounding in the process's log can make a
				// short part come out a little below zero.
				if v < -2 {
					t.Errorf("%s: %s = %.3f ms", name, want, v)
				}
				sum += v
			}
			if len(b.Parts) != len(parts) {
				t.Errorf("%s: parts %v, want %v", name, b.Parts, parts)
			}
			if gap := b.TotalMS - sum; math.Abs(gap) > 0.1*b.TotalMS || math.Abs(gap-b.UnaccountedMS) > 0.01 {
				t.Errorf("%s: parts sum to %.1f ms of %.1f ms (unaccounted %.1f ms): more than 10%% apart",
					name, sum, b.TotalMS, b.UnaccountedMS)
			}
			if w, _ := b.Part(PartWarmup); w <= 0 {
				t.Errorf("%s: warm-up %.3f ms", name, w)
			}
			if g, _ := b.Part(PartGeneration); g <= 0 {
				t.Errorf("%s: first generation %.3f ms", name, g)
			}
		}
	}
	if n == 0 {
		t.Error("no successful cold sample")
	}
}
