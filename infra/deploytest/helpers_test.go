package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// problems collects what a checker found; empty means the files pass.
type problems []string

func (p *problems) addf(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

// repoRoot is the folder holding go.mod, found upward from the test's
// working directory (infra/deploytest under go test).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// codeFacts are what the deployment files must agree with in the code.
type codeFacts struct {
	// envNames are the CONTROLFN_* variables the binary reads.
	envNames map[string]bool
	// routes are the server's paths (function/server).
	routes map[string]bool
	// metrics are the metric names /metrics exposes.
	metrics map[string]bool
	// goVersion is go.mod's go directive.
	goVersion string
}

var (
	envLiteral   = regexp.MustCompile(`"(CONTROLFN_[A-Z0-9_]+)"`)
	routeLiteral = regexp.MustCompile(`mux\.Handle\("(/[^"]*)"`)
	metricName   = regexp.MustCompile(`\b(controlfn_[a-z0-9_]+)`)
	goDirective  = regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`)
)

// loadCodeFacts reads the facts from the sources rather than importing the
// packages: infra/ sits outside the import graph (nothing imports
// function/), and a rename in the code must fail these tests.
func loadCodeFacts(t testing.TB, root string) codeFacts {
	t.Helper()
	f := codeFacts{envNames: map[string]bool{}, routes: map[string]bool{}, metrics: map[string]bool{}}
	for _, src := range goSources(t, root, "function/lambda", "cmd/controlfn") {
		for _, m := range envLiteral.FindAllStringSubmatch(string(readFile(t, src)), -1) {
			f.envNames[m[1]] = true
		}
	}
	for _, src := range goSources(t, root, "function/server") {
		data := string(readFile(t, src))
		for _, m := range routeLiteral.FindAllStringSubmatch(data, -1) {
			f.routes[m[1]] = true
		}
		if filepath.Base(src) == "metrics.go" {
			for _, m := range metricName.FindAllStringSubmatch(data, -1) {
				f.metrics[m[1]] = true
			}
		}
	}
	if m := goDirective.FindStringSubmatch(string(readFile(t, filepath.Join(root, "go.mod")))); m != nil {
		f.goVersion = m[1]
	}
	for what, n := range map[string]int{"CONTROLFN_* variables": len(f.envNames), "routes": len(f.routes), "metrics": len(f.metrics)} {
		if n == 0 {
			t.Fatalf("no %s found in the sources: the patterns of loadCodeFacts are stale", what)
		}
	}
	if f.goVersion == "" {
		t.Fatal("no go directive in go.mod")
	}
	return f
}

// goSources lists the non-test Go files of the given folders.
func goSources(t testing.TB, root string, dirs ...string) []string {
	t.Helper()
	var out []string
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(root, d, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				out = append(out, f)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no Go sources in %v", dirs)
	}
	return out
}

// hasMetric reports whether name is an exposed metric, histogram series
// (_bucket, _sum, _count) included.
func (f codeFacts) hasMetric(name string) bool {
	if f.metrics[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && f.metrics[base] {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expectProblem fails unless one of got mentions want: the check a
// mutation must trip.
func expectProblem(t *testing.T, got problems, want string) {
	t.Helper()
	for _, p := range got {
		if strings.Contains(p, want) {
			return
		}
	}
	if len(got) == 0 {
		t.Errorf("the mutation went unnoticed (want a problem mentioning %q)", want)
		return
	}
	t.Errorf("no problem mentions %q; got:\n  %s", want, strings.Join(got, "\n  "))
}

// replaceOnce returns s with old replaced by new, failing when old does not
// occur exactly once (a stale mutation would pass for the wrong reason).
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("mutation: %q occurs %d times, want once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}
