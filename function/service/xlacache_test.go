package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestXLACacheFlags(t *testing.T) {
	got := XLACacheFlags("", "/b/cache/xla-gpu")
	want := "--xla_gpu_kernel_cache_file=/b/cache/xla-gpu/kernels.bin --xla_gpu_per_fusion_autotune_cache_dir=/b/cache/xla-gpu/autotune"
	if got != want {
		t.Errorf("flags %q, want %q", got, want)
	}
	// An operator's flags stay, and their own cache locations win.
	got = XLACacheFlags("--xla_gpu_autotune_level=2  --xla_gpu_kernel_cache_file=/mine.bin", "/b/c")
	want = "--xla_gpu_autotune_level=2 --xla_gpu_kernel_cache_file=/mine.bin --xla_gpu_per_fusion_autotune_cache_dir=/b/c/autotune"
	if got != want {
		t.Errorf("flags %q, want %q", got, want)
	}
}

func TestEnableXLACache(t *testing.T) {
	bundle := t.TempDir()
	t.Setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
	dir, err := EnableXLACache(bundle, "NVIDIA H100 80GB HBM3")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(bundle, "cache", "xla-NVIDIA_H100_80GB_HBM3"); dir != want {
		t.Errorf("dir %q, want %q", dir, want)
	}
	if st, err := os.Stat(filepath.Join(dir, "autotune")); err != nil || !st.IsDir() {
		t.Errorf("autotune dir: %v", err)
	}
	if f := os.Getenv("XLA_FLAGS"); !strings.HasPrefix(f, "--xla_dump_to=/tmp/x ") || !strings.Contains(f, dir+"/kernels.bin") {
		t.Errorf("XLA_FLAGS = %q", f)
	}
	// A bundle whose cache cannot be created is an error, not a crash.
	ro := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(ro, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnableXLACache(ro, "gpu"); err == nil {
		t.Error("cache under a regular file: no error")
	}
}
