package artifacts

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func editManifest(t *testing.T, dir string, edit func(m *Manifest)) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = m.Marshal(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestName), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTampered(t *testing.T) {
	unet := "weights/unet.safetensors"
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		// want is the error's text and sentinel under each mode; a nil
		// sentinel with empty text means that mode does not notice.
		full, sizes     string
		fullIs, sizesIs error
	}{
		{
			name:   "byte flipped",
			tamper: func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, unet), 1000) },
			full:   unet + ": integrity mismatch: sha256 is ", fullIs: ErrMismatch,
		},
		{
			name:   "byte flipped in config",
			tamper: func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, "configs/vae.json"), 0) },
			full:   "configs/vae.json: integrity mismatch", fullIs: ErrMismatch,
		},
		{
			name:   "truncated",
			tamper: func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, unet), 100) },
			full:   unet + ": integrity mismatch: size is 100 bytes, manifest says 65536", fullIs: ErrMismatch,
			sizes: unet + ": integrity mismatch: size is 100", sizesIs: ErrMismatch,
		},
		{
			name:   "file removed",
			tamper: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, unet)) },
			full:   unet + ": no such file", fullIs: fs.ErrNotExist,
			sizes: unet + ": no such file", sizesIs: fs.ErrNotExist,
		},
		{
			name: "file replaced by a symlink to identical bytes",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, unet)
				data, _ := os.ReadFile(p)
				os.WriteFile(p+".real", data, 0o644)
				os.Remove(p)
				os.Symlink(filepath.Base(p)+".real", p)
				editManifest(t, dir, func(m *Manifest) {
					m.Files = append(m.Files, File{Path: unet + ".real", Size: int64(len(data)), SHA256: m.Components[0].SHA256})
				})
			},
			full: unet + ": integrity mismatch: not a regular file", fullIs: ErrMismatch,
			sizes: unet + ": integrity mismatch: not a regular file", sizesIs: ErrMismatch,
		},
		{
			name: "extra file",
			tamper: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, "weights/lora.safetensors"), nil, 0o644)
			},
			full: "weights/lora.safetensors: not listed in the manifest", fullIs: ErrUnexpectedFile,
			sizes: "weights/lora.safetensors: not listed", sizesIs: ErrUnexpectedFile,
		},
		{
			name: "entry deleted from the manifest",
			tamper: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m *Manifest) {
					m.Files = slices.DeleteFunc(m.Files, func(f File) bool { return f.Path == "tokenizer/merges.txt" })
				})
			},
			full: "tokenizer/merges.txt: not listed", fullIs: ErrUnexpectedFile,
			sizes: "tokenizer/merges.txt: not listed", sizesIs: ErrUnexpectedFile,
		},
		{
			name: "hash edited in the manifest",
			tamper: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m *Manifest) {
					for i := range m.Files {
						if m.Files[i].Path == "scheduler_config.json" {
							m.Files[i].SHA256 = sum('0')
						}
					}
				})
			},
			full: "scheduler_config.json: integrity mismatch", fullIs: ErrMismatch,
		},
		{
			name: "manifest made inconsistent",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, ManifestName)
				data, _ := os.ReadFile(p)
				data = bytes.Replace(data, []byte(`"tensors": 12`), []byte(`"tensors": -12`), 1)
				os.WriteFile(p, data, 0o644)
			},
			full: "manifest.json: invalid manifest: components[0] (unet): tensors -12", fullIs: ErrInvalidManifest,
			sizes: "tensors -12", sizesIs: ErrInvalidManifest,
		},
		{
			name: "unknown major",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, ManifestName)
				data, _ := os.ReadFile(p)
				os.WriteFile(p, bytes.Replace(data, []byte(`"1.1"`), []byte(`"2.0"`), 1), 0o644)
			},
			full: "manifest.json: unsupported bundle format version", fullIs: ErrUnsupportedVersion,
			sizes: "unsupported", sizesIs: ErrUnsupportedVersion,
		},
		{
			name:   "manifest removed",
			tamper: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, ManifestName)) },
			full:   "manifest.json: no such file", fullIs: fs.ErrNotExist,
			sizes: "manifest.json", sizesIs: fs.ErrNotExist,
		},
		{
			name: "cache entries are not the manifest's business",
			tamper: func(t *testing.T, dir string) {
				os.MkdirAll(filepath.Join(dir, "cache", "xla-cuda"), 0o755)
				os.WriteFile(filepath.Join(dir, "cache", "xla-cuda", "junk"), []byte("x"), 0o644)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			writeSample(t, dir)
			tc.tamper(t, dir)
			for _, mode := range []struct {
				opts Options
				want string
				is   error
			}{
				{Options{}, tc.full, tc.fullIs},
				{Options{Parallelism: 1}, tc.full, tc.fullIs},
				{Options{Parallelism: -1}, tc.full, tc.fullIs},
				{Options{Verify: VerifySizes}, tc.sizes, tc.sizesIs},
			} {
				_, err := Open(dir, mode.opts)
				if mode.want == "" {
					if err != nil {
						t.Errorf("Open(%+v): %v", mode.opts, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("Open(%+v) succeeded, want %q", mode.opts, mode.want)
					continue
				}
				if !strings.Contains(err.Error(), mode.want) || !errors.Is(err, mode.is) {
					t.Errorf("Open(%+v) = %q, want %q and %v", mode.opts, err, mode.want, mode.is)
				}
			}
		})
	}
}

func TestOpenReportsEveryBadFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	writeSample(t, dir)
	flipByte(t, filepath.Join(dir, "weights/unet.safetensors"), 5)
	flipByte(t, filepath.Join(dir, "weights/vae.safetensors"), 5)
	os.Remove(filepath.Join(dir, "tokenizer/vocab.json"))
	_, err := Open(dir, Options{})
	mustContain(t, err, "weights/unet.safetensors: integrity", "weights/vae.safetensors: integrity", "tokenizer/vocab.json: no such file")
}

func TestOpenLazy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	writeSample(t, dir)
	flipByte(t, filepath.Join(dir, "weights/vae.safetensors"), 5)
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644)

	b, err := Open(dir, Options{Verify: VerifyNone})
	if err != nil {
		t.Fatalf("VerifyNone: %v", err)
	}
	if err := b.VerifyFile("weights/unet.safetensors"); err != nil {
		t.Errorf("VerifyFile(unet): %v", err)
	}
	mustContain(t, b.VerifyFile("weights/vae.safetensors"), "weights/vae.safetensors: integrity mismatch")
	mustContain(t, b.VerifyFile("weights/nope.safetensors"), "weights/nope.safetensors: not listed")
	mustContain(t, b.Verify(), "notes.txt: not listed")

	if _, err := Open(dir, Options{Verify: VerifySizes, AllowExtraFiles: true}); err != nil {
		t.Errorf("VerifySizes with extra files allowed: %v", err)
	}
	_, err = Open(dir, Options{AllowExtraFiles: true})
	mustContain(t, err, "weights/vae.safetensors: integrity mismatch")
}

func TestBundlePaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	writeSample(t, dir)
	b, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Component("vae")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Path(c.Weights), filepath.Join(dir, "weights", "vae.safetensors"); got != want {
		t.Errorf("Path(%s) = %s, want %s", c.Weights, got, want)
	}
	if _, err := os.Stat(b.Path(c.Config)); err != nil {
		t.Error(err)
	}
	mustContain(t, func() error { _, err := b.Component("controlnet.0"); return err }(), `no component "controlnet.0"`)
}

func TestSummary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	writeSample(t, dir)
	b, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := b.Summary()
	t.Logf("\n%s", s)
	for _, want := range []string{
		"bundle   " + dir,
		"build    3f1e4c1a-9a51-4b61-8f8e-5c8b5f0a2d11",
		"created  2025-11-27T16:53:00Z",
		"dtype    float16",
		"buckets  64x64x1, 64x64x2",
		"size     80.1 KiB in 9 files",
		"unet  unet  12 tensors  60.0 KiB  weights/unet.safetensors",
		"vae   vae   3 tensors   15.0 KiB  weights/vae.safetensors",
		"programs (1, StableHLO):",
		"step_b1_8x8  programs/step_b1_8x8.mlir  23 B  sha256 f45b27e2fbac  buckets 64x64x1",
		"checkpoint  /models/v1-5.safetensors  100 B",
		"style.safetensors  scale 0.8  kohya  sha256 222222222222",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{2 << 30, "2.0 GiB"}, {3 << 50, "3.0 PiB"}, {1 << 62, "4096.0 PiB"},
	} {
		if got := formatBytes(tc.n); got != tc.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
