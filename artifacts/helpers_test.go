package artifacts

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sampleFiles is the content of a small bundle: two components, a program,
// a tokenizer and a scheduler config.
func sampleFiles() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	weights := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	return map[string][]byte{
		"configs/unet.json":            []byte(`{"block_out_channels": [32, 64]}`),
		"configs/vae.json":             []byte(`{"latent_channels": 4}`),
		"weights/unet.safetensors":     weights(64 << 10),
		"weights/vae.safetensors":      weights(16 << 10),
		"programs/step_b1_8x8.mlir":    []byte("module @step_b1_8x8 {}\n"),
		"tokenizer/vocab.json":         []byte(`{"a</w>": 320}`),
		"tokenizer/merges.txt":         []byte("#version: 0.2\na b\n"),
		"scheduler_config.json":        []byte(`{"num_train_timesteps": 1000}`),
		"tokenizer/special_tokens.txt": nil, // an empty file is a file too
	}
}

// sampleManifest describes sampleFiles; Commit fills Files and hashes.
func sampleManifest() *Manifest {
	m := validManifest()
	m.FormatVersion, m.Files = Version{}, nil
	m.Buckets = []Bucket{{64, 64, 1}, {64, 64, 2}}
	m.Components = []Component{{
		Name: "unet", Kind: KindUNet, Config: "configs/unet.json", Weights: "weights/unet.safetensors",
		Tensors: 12, Bytes: 60 << 10,
	}, {
		Name: "vae", Kind: KindVAE, Config: "configs/vae.json", Weights: "weights/vae.safetensors",
		Tensors: 3, Bytes: 15 << 10,
	}}
	m.Programs = []Program{{Name: "step_b1_8x8", Buckets: []Bucket{{64, 64, 1}}, File: "programs/step_b1_8x8.mlir"}}
	return m
}

// writeSample writes the sample bundle to dir and returns its manifest.
func writeSample(t testing.TB, dir string) *Manifest {
	t.Helper()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for rel, data := range sampleFiles() {
		if _, err := w.AddBytes(rel, data); err != nil {
			t.Fatal(err)
		}
	}
	m := sampleManifest()
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// siblings lists the entries beside dir other than dir itself, to catch
// temporary directories left behind.
func siblings(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != filepath.Base(dir) {
			names = append(names, e.Name())
		}
	}
	return names
}

// failingReader yields n bytes, then fails: a producer dying mid-file.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errInjected
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

var errInjected = errors.New("injected failure")

// goldenDir returns the shared golden folder, or skips. It repeats
// internal/golden's lookup because that package imports
// kernels/safetensors, which artifacts must not depend on.
func goldenDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CONTROLFN_GOLDEN")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared", "golden")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if os.Getenv("CI") != "" {
			t.Fatalf("golden data folder %q not found; CI requires it", dir)
		}
		t.Skipf("golden data folder %q not found", dir)
	}
	return dir
}

func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}
