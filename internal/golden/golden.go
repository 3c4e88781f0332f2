// Package golden locates the shared reference data (../shared/golden) that
// parity tests compare against. Tests call Dir and never hard-code the path.
package golden

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// EnvVar names the environment variable that overrides the golden folder.
const EnvVar = "CONTROLFN_GOLDEN"

// Dir returns the golden data folder. When the folder is missing the test is
// skipped with a message, except under CI (CI set), where a missing reference
// is a failure: a parity test that silently skips proves nothing.
func Dir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvVar)
	if dir == "" {
		dir = defaultDir()
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if os.Getenv("CI") != "" {
			t.Fatalf("golden data folder %q not found (set %s); CI requires it", dir, EnvVar)
		}
		t.Skipf("golden data folder %q not found (set %s); skipping parity test", dir, EnvVar)
	}
	return dir
}

// Path joins elements onto the golden folder.
func Path(t testing.TB, elem ...string) string {
	t.Helper()
	return filepath.Join(append([]string{Dir(t)}, elem...)...)
}

// defaultDir is ../shared/golden relative to the repository root, found from
// this source file so it works from any package's test directory.
func defaultDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return filepath.Join("..", "shared", "golden")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	return filepath.Join(root, "..", "shared", "golden")
}
