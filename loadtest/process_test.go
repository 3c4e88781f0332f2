package loadtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogWatch(t *testing.T) {
	// Output as the emulator relays it: its own text lines, the
	// bootstrap's JSON lines, and a line longer than the read buffer.
	out := strings.Join([]string{
		`27 Nov 2026 18:19:49,752 [INFO] (rapid) exec '/tmp/controlfn' (cwd=/tmp, handler=lambda)`,
		`{"time":"2026-11-27T18:19:50.056313976Z","level":"INFO","msg":"init","open_ms":12,"load_ms":4,"compile_ms":35,"warmup_ms":218,"total_ms":279}`,
		`{"time":"2026-11-27T18:19:50.056620733Z","level":"INFO","msg":"init","init_ms":282.602,"generator_ms":280.132}`,
		`{"time":"2026-11-27T18:19:50.1Z","msg":"` + strings.Repeat("x", 100<<10) + `","cold":true,"duration_ms":1}`,
		`{"time":"2026-11-27T18:19:50.322855019Z","level":"INFO","msg":"invocation","cold":true,"init_ms":282.602,"duration_ms":260.438}`,
		`{"time":"2026-11-27T18:19:51Z","level":"INFO","msg":"invocation","cold":false,"duration_ms":250}`,
		`{"time":"2026-11-27T18:19:52Z","msg":"init","open_ms":1,"load_ms":1,"compile_ms":1,"warmup_ms":1,"total_ms":4}`,
		`not json {`,
		`{"msg":"init","open_ms":1,"total_ms":1}`,
		`END RequestId: 89d45f90`,
	}, "\n") // no final newline: the last line still counts
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "p.log")
	raw, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	l := newLogWatch(r, raw)
	go func() {
		_, _ = w.WriteString(out)
		w.Close()
	}()
	l.finish(5 * time.Second)

	seen := l.snapshot()
	if seen.load == nil || *seen.load.TotalMS != 279 || *seen.load.OpenMS != 12 {
		t.Errorf("load line = %+v, want the first one (total 279)", seen.load)
	}
	if seen.runtimeInit == nil || *seen.runtimeInit.InitMS != 282.602 || *seen.runtimeInit.GeneratorMS != 280.132 {
		t.Errorf("runtime init line = %+v", seen.runtimeInit)
	}
	if seen.firstCall == nil || *seen.firstCall.DurationMS != 260.438 {
		t.Errorf("first call = %+v, want the cold invocation (260.438 ms)", seen.firstCall)
	}
	if seen.serving != nil {
		t.Errorf("serving = %+v, want none", seen.serving)
	}
	tail := l.tail()
	// Ten lines less the one too long to be ours.
	if !strings.HasSuffix(tail, "END RequestId: 89d45f90") || strings.Count(tail, "\n") != 8 {
		t.Errorf("tail does not end with the last line or has the wrong length:\n%.300s", tail)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != out {
		t.Errorf("the log file holds %d bytes, want the %d written", len(data), len(out))
	}
}

func TestStartProcessFails(t *testing.T) {
	if _, err := startProcess(filepath.Join(t.TempDir(), "missing"), nil, nil, ""); err == nil {
		t.Error("starting a missing binary succeeded")
	}
}

func TestLogWatchTailRing(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	l := newLogWatch(r, nil)
	go func() {
		for i := range 30 {
			_, _ = w.WriteString(strings.Repeat("a", i%3) + "line " + string(rune('A'+i)) + "\n")
		}
		w.Close()
	}()
	l.finish(5 * time.Second)
	lines := strings.Split(l.tail(), "\n")
	if len(lines) != tailLines || !strings.HasSuffix(lines[0], "line "+string(rune('A'+30-tailLines))) ||
		!strings.HasSuffix(lines[tailLines-1], "line "+string(rune('A'+29))) {
		t.Errorf("tail = %q", lines)
	}
}
