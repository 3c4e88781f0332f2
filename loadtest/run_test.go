package loadtest

import (
	"context"
	"fmt"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer answers /v1/generate like the edge server: one generation
// at a time taking d, 429 to a request that finds it busy.
func fakeServer(t *testing.T, d time.Duration) *httptest.Server {
	t.Helper()
	var busy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != generatePath {
			http.NotFound(w, r)
			return
		}
		if !busy.CompareAndSwap(false, true) {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"busy"}}`)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		busy.Store(false)
		fmt.Fprintf(w, `{"images":[],"timings_ms":{"total":%s}}`, strconv.FormatInt(d.Milliseconds(), 10))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRunWarmURL(t *testing.T) {
	tests := []struct {
		name        string
		requests    int
		concurrency int
		timeout     time.Duration
		check       func(t *testing.T, p Phase)
	}{{
		name: "sequential", requests: 6, concurrency: 1, timeout: time.Minute,
		check: func(t *testing.T, p Phase) {
			if p.Sent != 6 || p.OK != 6 || len(p.Errors) != 0 || p.Stopped != "" || p.Instances != 0 || p.Priming != 0 {
				t.Errorf("sent %d ok %d errors %v stopped %q instances %d priming %d", p.Sent, p.OK, p.Errors, p.Stopped, p.Instances, p.Priming)
			}
			if p.Warm == nil || p.Warm.Min < 20 || p.Cold != nil {
				t.Errorf("warm %+v cold %+v: want six warm samples of at least 20 ms", p.Warm, p.Cold)
			}
			// Six 20 ms requests in a row: at most 50 per second.
			if p.ThroughputRPS <= 0 || p.ThroughputRPS > 50 {
				t.Errorf("throughput %v", p.ThroughputRPS)
			}
		},
	}, {
		name: "concurrent clients find it busy", requests: 8, concurrency: 4, timeout: time.Minute,
		check: func(t *testing.T, p Phase) {
			if p.Sent != 8 || p.OK+p.Errors[KindBusy] != 8 || p.Errors[KindBusy] == 0 || len(p.Errors) != 1 {
				t.Errorf("sent %d ok %d errors %v: want 8, some busy, nothing else", p.Sent, p.OK, p.Errors)
			}
		},
	}, {
		name: "timeout", requests: 1000, concurrency: 1, timeout: 150 * time.Millisecond,
		check: func(t *testing.T, p Phase) {
			if p.Stopped == "" || p.Sent >= 1000 || p.OK == 0 || p.Sent != p.OK+p.Errors[KindTimeout] {
				t.Errorf("sent %d ok %d errors %v stopped %q: want a stop with the cut-off request a timeout",
					p.Sent, p.OK, p.Errors, p.Stopped)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeServer(t, 20*time.Millisecond)
			rep, err := Run(context.Background(), Config{
				Target: TargetHTTP, URL: srv.URL, Modes: []string{ModeWarm},
				Requests: tt.requests, Concurrency: tt.concurrency, Timeout: tt.timeout,
			})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, rep.Phases[0])
		})
	}
}

// TestImports holds the package to the design rule: of this module, it
// may use the function's schema only.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	const module = "github.com/controlfn/controlfn/"
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, module) && path != module+"function/schema" {
				t.Errorf("%s imports %s: loadtest may import only function/schema", name, path)
			}
		}
	}
}
