package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

func TestWriterCommit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bundles", "sd15") // parents are created
	m := writeSample(t, dir)

	if got := siblings(t, dir); len(got) != 0 {
		t.Errorf("left beside the bundle: %v", got)
	}
	if m.BuildID == uuid.Nil || m.Created.IsZero() || m.FormatVersion != CurrentVersion() {
		t.Errorf("Commit did not complete the manifest: %+v", m)
	}
	files := sampleFiles()
	if len(m.Files) != len(files) {
		t.Fatalf("manifest lists %d files, want %d", len(m.Files), len(files))
	}
	for i, f := range m.Files {
		if i > 0 && m.Files[i-1].Path >= f.Path {
			t.Errorf("files not sorted: %s before %s", m.Files[i-1].Path, f.Path)
		}
		want := sha256.Sum256(files[f.Path])
		if f.SHA256 != hex.EncodeToString(want[:]) || f.Size != int64(len(files[f.Path])) {
			t.Errorf("%s recorded as %+v", f.Path, f)
		}
	}
	if m.Components[0].SHA256 != m.Files[len(m.Files)-2].SHA256 {
		t.Errorf("unet sha256 not filled from weights/unet.safetensors")
	}
	b, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.BuildID != m.BuildID {
		t.Errorf("opened build %s, wrote %s", b.Manifest.BuildID, m.BuildID)
	}
}

func TestWriterAddMethods(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	payload := strings.Repeat("tensor data ", 100000) // > the 1 MiB buffer
	want := sha256.Sum256([]byte(payload))
	for _, tc := range []struct {
		rel string
		add func(rel string) (File, error)
	}{
		{"a/bytes", func(rel string) (File, error) { return w.AddBytes(rel, []byte(payload)) }},
		{"a/reader", func(rel string) (File, error) { return w.AddReader(rel, strings.NewReader(payload)) }},
		{"a/stream", func(rel string) (File, error) {
			return w.AddStream(rel, func(dst io.Writer) error {
				for i := 0; i < len(payload); i += 7 {
					if _, err := io.WriteString(dst, payload[i:min(i+7, len(payload))]); err != nil {
						return err
					}
				}
				return nil
			})
		}},
		{"a/file", func(rel string) (File, error) {
			return w.AddFile(rel, func(path string) error { return os.WriteFile(path, []byte(payload), 0o600) })
		}},
	} {
		f, err := tc.add(tc.rel)
		if err != nil {
			t.Fatalf("%s: %v", tc.rel, err)
		}
		if f.Path != tc.rel || f.Size != int64(len(payload)) || f.SHA256 != hex.EncodeToString(want[:]) {
			t.Errorf("%s: recorded %+v", tc.rel, f)
		}
		got, err := os.ReadFile(filepath.Join(w.tmp, filepath.FromSlash(tc.rel)))
		if err != nil || string(got) != payload {
			t.Errorf("%s: on disk %d bytes, %v", tc.rel, len(got), err)
		}
	}
}

func TestWriterRejects(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.AddBytes("configs/unet.json", nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rel, want string
	}{
		{"configs/unet.json", "added twice"},
		{"../escape", "leaves the bundle"},
		{"/abs", "absolute"},
		{"a/./b", "not clean"},
		{ManifestName, "reserved"},
		{"cache/go-cpu/x.exec", "reserved"},
	} {
		_, err := w.AddBytes(tc.rel, []byte("x"))
		mustContain(t, err, tc.want)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a rejected path was written: %v", err)
	}
}

// A producer that fails mid-file leaves no trace of the file, and the
// bundle can still be completed without it, or abandoned.
func TestWriterFailMidFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(w *Writer) (File, error)
	}{
		{"reader", func(w *Writer) (File, error) {
			return w.AddReader("weights/unet.safetensors", &failingReader{n: 3 << 20})
		}},
		{"stream", func(w *Writer) (File, error) {
			return w.AddStream("weights/unet.safetensors", func(dst io.Writer) error {
				dst.Write(make([]byte, 100))
				return errInjected
			})
		}},
		{"file", func(w *Writer) (File, error) {
			return w.AddFile("weights/unet.safetensors", func(path string) error {
				os.WriteFile(path, make([]byte, 100), 0o644)
				return errInjected
			})
		}},
		{"file never written", func(w *Writer) (File, error) {
			return w.AddFile("weights/unet.safetensors", func(string) error { return nil })
		}},
		{"file is a symlink", func(w *Writer) (File, error) {
			return w.AddFile("weights/unet.safetensors", func(path string) error {
				return os.Symlink("/etc/hostname", path)
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			w, err := NewWriter(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tc.add(w); err == nil || !strings.Contains(err.Error(), "weights/unet.safetensors") {
				t.Fatalf("add error %v does not name the file", err)
			}
			if _, err := os.Lstat(filepath.Join(w.tmp, "weights", "unet.safetensors")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("partial file left in the temp dir: %v", err)
			}
			// The path is free again: a retry succeeds.
			if _, err := w.AddBytes("weights/unet.safetensors", []byte("ok")); err != nil {
				t.Errorf("retry: %v", err)
			}
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			if got := siblings(t, dir); len(got) != 0 {
				t.Errorf("Abort left %v", got)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("final dir exists after Abort: %v", err)
			}
		})
	}
}

// A compile killed before Commit leaves only a hidden sibling with no
// manifest: nothing at the final path, nothing Open accepts.
func TestWriterNeverCommitted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	for rel, data := range sampleFiles() {
		if _, err := w.AddBytes(rel, data); err != nil {
			t.Fatal(err)
		}
	}
	// No Commit, no Abort: the process "dies" here.
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("final dir exists before Commit: %v", err)
	}
	left := siblings(t, dir)
	if len(left) != 1 || !strings.HasPrefix(left[0], ".b.tmp-") {
		t.Fatalf("siblings = %v, want one hidden .b.tmp-*", left)
	}
	tmp := filepath.Join(filepath.Dir(dir), left[0])
	if _, err := Open(tmp, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(temp dir) = %v, want a missing manifest", err)
	}
}

func TestWriterCommitFailures(t *testing.T) {
	t.Run("invalid manifest keeps the writer usable", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "b")
		w, err := NewWriter(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		for rel, data := range sampleFiles() {
			w.AddBytes(rel, data)
		}
		m := sampleManifest()
		m.Components[0].Weights = "weights/missing.safetensors"
		mustContain(t, w.Commit(m), "weights/missing.safetensors", "not in files")
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("final dir exists after a failed Commit: %v", err)
		}
		if err := w.Commit(sampleManifest()); err != nil {
			t.Fatalf("second Commit: %v", err)
		}
		mustContain(t, w.Commit(sampleManifest()), "already committed")
		_, err = w.AddBytes("late", nil)
		mustContain(t, err, "already committed")
	})
	t.Run("stray file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "b")
		w, err := NewWriter(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		for rel, data := range sampleFiles() {
			w.AddBytes(rel, data)
		}
		// A producer that writes a sibling beside its own file.
		w.AddFile("programs/extra.mlir", func(path string) error {
			os.WriteFile(path+".partial", nil, 0o644)
			return os.WriteFile(path, nil, 0o644)
		})
		mustContain(t, w.Commit(sampleManifest()), "programs/extra.mlir.partial", "not listed")
	})
}

func TestWriterExistingFinal(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prepare   func(t *testing.T, dir string) // makes something at dir
		overwrite bool
		want      string // "" means Commit succeeds
	}{
		{"bundle without overwrite", func(t *testing.T, dir string) { writeSample(t, dir) }, false, "already exists; set Overwrite"},
		{"bundle with overwrite", func(t *testing.T, dir string) { writeSample(t, dir) }, true, ""},
		{"empty dir with overwrite", func(t *testing.T, dir string) { os.Mkdir(dir, 0o755) }, true, ""},
		{"other dir with overwrite", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "thesis.tex"), nil, 0o644)
		}, true, "not a bundle"},
		{"file with overwrite", func(t *testing.T, dir string) { os.WriteFile(dir, nil, 0o644) }, true, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			tc.prepare(t, dir)
			w, err := NewWriter(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			w.Overwrite = tc.overwrite
			for rel, data := range sampleFiles() {
				w.AddBytes(rel, data)
			}
			m := sampleManifest()
			m.ToolVersion = "second build"
			err = w.Commit(m)
			if tc.want != "" {
				mustContain(t, err, tc.want)
				w.Abort()
			} else if err != nil {
				t.Fatal(err)
			} else {
				b, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if b.Manifest.ToolVersion != "second build" {
					t.Errorf("old bundle still in place")
				}
			}
			if got := siblings(t, dir); len(got) != 0 {
				t.Errorf("left beside the bundle: %v", got)
			}
		})
	}
}

func TestWriterConcurrentAdds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	var wg sync.WaitGroup
	for rel, data := range sampleFiles() {
		wg.Go(func() {
			if _, err := w.AddBytes(rel, data); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := w.Commit(sampleManifest()); err != nil {
		t.Fatal(err)
	}
}
