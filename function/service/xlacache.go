package service

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/artifacts"
)

// XLA's GPU compiler keeps two persistent caches of its own, both keyed by
// content (fusion fingerprints and the device), so entries from other
// programs or bundles can never be reused wrongly: compiled kernels
// (LLVM → PTX → cubin) and autotuning results. go-xla v0.4.5 cannot
// serialize a whole PJRT executable (see artifacts' package doc), so these
// are what a second cold start on the same GPU can skip. They are switched
// on through XLA_FLAGS, which the PJRT plugin reads when it creates its
// client: EnableXLACache must run before the backend is created.
const (
	xlaKernelCacheFlag   = "--xla_gpu_kernel_cache_file"
	xlaAutotuneCacheFlag = "--xla_gpu_per_fusion_autotune_cache_dir"
)

// XLACacheFlags adds the cache flags for dir to an XLA_FLAGS value, keeping
// every flag already there (a flag the operator set wins).
func XLACacheFlags(existing, dir string) string {
	flags := strings.Fields(existing)
	has := func(name string) bool {
		for _, f := range flags {
			if f == name || strings.HasPrefix(f, name+"=") {
				return true
			}
		}
		return false
	}
	if !has(xlaKernelCacheFlag) {
		flags = append(flags, xlaKernelCacheFlag+"="+filepath.Join(dir, "kernels.bin"))
	}
	if !has(xlaAutotuneCacheFlag) {
		flags = append(flags, xlaAutotuneCacheFlag+"="+filepath.Join(dir, "autotune"))
	}
	return strings.Join(flags, " ")
}

// EnableXLACache points XLA's GPU caches into the bundle's executable
// cache, cache/xla-<device>/ (see artifacts.CacheDir), creating it, and
// returns the directory. The bundle may be read-only with cache/ a link to
// writable storage. Call it before creating an XLA backend.
func EnableXLACache(bundleDir, device string) (string, error) {
	dir := artifacts.CacheDir(bundleDir, "xla", device)
	if err := os.MkdirAll(filepath.Join(dir, "autotune"), 0o755); err != nil {
		return "", fmt.Errorf("xla cache: %w", err)
	}
	if err := os.Setenv("XLA_FLAGS", XLACacheFlags(os.Getenv("XLA_FLAGS"), dir)); err != nil {
		return "", fmt.Errorf("xla cache: %w", err)
	}
	return dir, nil
}

// GPUName is the model of the first NVIDIA GPU as the driver reports it
// (e.g. "NVIDIA H100 80GB HBM3"), or "cuda" when it cannot be read: cache
// entries are only reused on the device model they were built for.
func GPUName() string {
	infos, _ := filepath.Glob("/proc/driver/nvidia/gpus/*/information")
	for _, p := range infos {
		if name := modelLine(p); name != "" {
			return name
		}
	}
	return "cuda"
}

func modelLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "Model" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
