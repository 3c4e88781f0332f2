package artifacts

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCacheKey(t *testing.T) {
	k := CacheKey("0123456789abcdef", "xla", "cuda:0")
	if err := checkSHA256(k); err != nil {
		t.Fatalf("key %q: %v", k, err)
	}
	if k != CacheKey("0123456789abcdef", "xla", "cuda:0") {
		t.Error("CacheKey is not deterministic")
	}
	seen := map[string]string{k: "base"}
	for name, other := range map[string]string{
		"program": CacheKey("0123456789abcdee", "xla", "cuda:0"),
		"backend": CacheKey("0123456789abcdef", "go", "cuda:0"),
		"device":  CacheKey("0123456789abcdef", "xla", "cuda:1"),
		// Moving characters between parts must not collide.
		"shifted": CacheKey("0123456789abcdefx", "la", "cuda:0"),
	} {
		if prev, dup := seen[other]; dup {
			t.Errorf("%s key equals the %s key", name, prev)
		}
		seen[other] = name
	}
}

func TestCacheDir(t *testing.T) {
	for _, tc := range []struct {
		backend, device, want string
	}{
		{"go", "cpu", "go-cpu"},
		{"xla", "cuda:0", "xla-cuda_0"},
		{"xla", "NVIDIA H100 80GB HBM3", "xla-NVIDIA_H100_80GB_HBM3"},
		{"../..", "/etc", ".._..-_etc"}, // one path element, never "." or ".."
		{"", "", "unknown-unknown"},
		{"xla", strings.Repeat("d", 100), "xla-" + strings.Repeat("d", maxCacheNameLen)},
	} {
		got := CacheDir("/bundle", tc.backend, tc.device)
		if want := filepath.Join("/bundle", "cache", tc.want); got != want {
			t.Errorf("CacheDir(%q, %q) = %q, want %q", tc.backend, tc.device, got, want)
		}
	}
}

func TestExecutableRoundTrip(t *testing.T) {
	dir := CacheDir(t.TempDir(), "xla", "cuda:0")
	key := CacheKey("0123456789abcdef", "xla", "cuda:0")
	for _, data := range [][]byte{[]byte("serialized executable"), {}, bytes.Repeat([]byte{7}, 3<<20)} {
		if err := StoreExecutable(dir, key, data); err != nil {
			t.Fatal(err)
		}
		got, err := LoadExecutable(dir, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("LoadExecutable = %d bytes, %v; want %d bytes", len(got), err, len(data))
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("cache dir holds %d entries, want 1 (no temp files left)", len(entries))
	}
}

// Every way an entry can be wrong reads as a miss that says why.
func TestExecutableMiss(t *testing.T) {
	key := CacheKey("0123456789abcdef", "xla", "cuda:0")
	other := CacheKey("0123456789abcdef", "xla", "cuda:1")
	entry := func(dir string) string { return filepath.Join(dir, key+cacheExt) }
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		key     string
		want    string
	}{
		{"absent", func(t *testing.T, dir string) { os.Remove(entry(dir)) }, key, "no such file"},
		{"bad key", nil, "../../etc/passwd", "key"},
		{"payload byte flipped", func(t *testing.T, dir string) {
			flipByte(t, entry(dir), cacheHeaderSize+3)
		}, key, "payload sha256"},
		{"hash byte flipped", func(t *testing.T, dir string) {
			flipByte(t, entry(dir), cacheHeaderSize-1)
		}, key, "payload sha256"},
		{"truncated payload", func(t *testing.T, dir string) {
			os.Truncate(entry(dir), cacheHeaderSize+5)
		}, key, "header says 21 payload bytes, file holds 5"},
		{"truncated header", func(t *testing.T, dir string) { os.Truncate(entry(dir), 20) }, key, "header: unexpected EOF"},
		{"empty file", func(t *testing.T, dir string) { os.Truncate(entry(dir), 0) }, key, "header: EOF"},
		{"appended garbage", func(t *testing.T, dir string) {
			f, _ := os.OpenFile(entry(dir), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("junk"))
			f.Close()
		}, key, "header says 21 payload bytes, file holds 25"},
		{"size field huge", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(entry(dir))
			copy(data[72:80], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
			os.WriteFile(entry(dir), data, 0o644)
		}, key, "payload bytes, file holds 21"},
		{"bad magic", func(t *testing.T, dir string) { flipByte(t, entry(dir), 0) }, key, "bad magic"},
		{"stored for another key", func(t *testing.T, dir string) {
			os.Rename(entry(dir), filepath.Join(dir, other+cacheExt))
			StoreExecutable(dir, other, []byte("serialized executable"))
			data, _ := os.ReadFile(filepath.Join(dir, other+cacheExt))
			os.WriteFile(entry(dir), data, 0o644)
		}, key, "entry was stored for key \"" + other + "\""},
		{"entry is a directory", func(t *testing.T, dir string) {
			os.Remove(entry(dir))
			os.Mkdir(entry(dir), 0o755)
		}, key, "header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := StoreExecutable(dir, key, []byte("serialized executable")); err != nil {
				t.Fatal(err)
			}
			if tc.corrupt != nil {
				tc.corrupt(t, dir)
			}
			data, err := LoadExecutable(dir, tc.key)
			if data != nil || !errors.Is(err, ErrCacheMiss) {
				t.Fatalf("LoadExecutable = %q, %v; want a miss", data, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("miss %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestStoreExecutableFailure(t *testing.T) {
	parent := t.TempDir()
	blocker := filepath.Join(parent, "file")
	os.WriteFile(blocker, nil, 0o644)
	err := StoreExecutable(filepath.Join(blocker, "cache"), CacheKey("0123456789abcdef", "go", "cpu"), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "store executable") {
		t.Errorf("StoreExecutable under a file = %v", err)
	}
	mustContain(t, StoreExecutable(parent, "not-a-key", nil), "key")
	if _, err := LoadExecutable(filepath.Join(blocker, "cache"), CacheKey("0123456789abcdef", "go", "cpu")); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("LoadExecutable under a file = %v, want a miss", err)
	}
}
