package compiler

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
)

var twoBuckets = []artifacts.Bucket{{Width: 64, Height: 64, Batch: 1}, {Width: 96, Height: 64, Batch: 2}}

// mainParams lists the types of the parameters of a program's main
// function, e.g. "1x77xi32".
func mainParams(t *testing.T, text []byte) []string {
	t.Helper()
	sig := regexp.MustCompile(`func\.func @main\((.*?)\) ->`).FindSubmatch(text)
	if sig == nil {
		t.Fatalf("no main function in:\n%.300s", text)
	}
	var out []string
	for _, m := range regexp.MustCompile(`%[^:]+: tensor<([^>]*)>`).FindAllSubmatch(sig[1], -1) {
		out = append(out, string(m[1]))
	}
	return out
}

// The compiler traces every program the function compiles, per bucket,
// with the signature the function's own programs have: the same inputs and
// one fp16 parameter per weight the Go backend binds.
func TestCompilePrograms(t *testing.T) {
	b, res := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), Buckets: twoBuckets})
	m := res.Manifest
	byName := map[string]artifacts.Program{}
	for _, p := range m.Programs {
		byName[p.Name] = p
	}
	want := map[string][]artifacts.Bucket{
		"clip_text_b1_t77_skip0": twoBuckets, "clip_text_b2_t77_skip0": twoBuckets,
		"step_b1_8x8_cn1": twoBuckets[:1], "step_b2_8x8_cn1": twoBuckets[:1], "vae_decoder_b1_8x8": twoBuckets[:1],
		"step_b2_8x12_cn1": twoBuckets[1:], "step_b4_8x12_cn1": twoBuckets[1:], "vae_decoder_b2_8x12": twoBuckets[1:],
	}
	if len(byName) != len(want) {
		t.Errorf("programs %v, want %d", slices.Sorted(func(yield func(string) bool) {
			for k := range byName {
				if !yield(k) {
					return
				}
			}
		}), len(want))
	}
	for name, buckets := range want {
		if p, ok := byName[name]; !ok || !slices.Equal(p.Buckets, buckets) || p.File != artifacts.ProgramPath(name) {
			t.Errorf("program %s: %+v, want buckets %v", name, p, buckets)
		}
	}

	// The same programs on the Go backend, from the same bundle.
	comps, err := pipeline.LoadBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	defer comps.Close()
	for _, bk := range twoBuckets {
		p, err := pipeline.New(comps, pipeline.Options{Precision: nn.KeepStored, Buckets: []pipeline.Bucket{{Width: bk.Width, Height: bk.Height, NumImages: bk.Batch}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, prog := range p.Programs() {
			text, err := os.ReadFile(b.Path(artifacts.ProgramPath(prog.Name())))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(text, []byte("module @"+prog.Name()+" {")) {
				t.Errorf("%s: text starts %.40q", prog.Name(), text)
			}
			params := mainParams(t, text)
			inputs := len(params) - prog.NumWeights()
			if inputs < 1 || inputs > 7 {
				t.Errorf("%s: %d parameters for %d weights", prog.Name(), len(params), prog.NumWeights())
				continue
			}
			for _, w := range params[inputs:] {
				if !strings.HasSuffix(w, "xf16") && w != "f16" {
					t.Errorf("%s: weight parameter tensor<%s>, want fp16", prog.Name(), w)
					break
				}
			}
			for _, op := range []string{"stablehlo.dot_general", "stablehlo.convert"} {
				if !bytes.Contains(text, []byte(op)) {
					t.Errorf("%s: no %s", prog.Name(), op)
				}
			}
		}
		p.Close()
	}

	// Tracing is deterministic: a second compile stores the same programs,
	// so the executable cache keyed by their hashes carries over.
	_, res2 := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), Buckets: twoBuckets})
	if !slices.EqualFunc(m.Programs, res2.Manifest.Programs, func(a, b artifacts.Program) bool { return a.SHA256 == b.SHA256 }) {
		t.Error("two compiles of one model traced different programs")
	}
}

// mlirOpt finds LLVM's mlir-opt (Debian: mlir-19-tools).
func mlirOpt() string {
	if p, err := exec.LookPath("mlir-opt"); err == nil {
		return p
	}
	ms, _ := filepath.Glob("/usr/lib/llvm-*/bin/mlir-opt")
	slices.Sort(ms)
	if len(ms) > 0 {
		return ms[len(ms)-1]
	}
	return ""
}

// An independent parser accepts every stored program: MLIR checks the
// syntax, that every value is defined before use, and that each use has
// the type of its definition. (The StableHLO ops themselves are checked by
// XLA on the GPU machine: make device-check.)
func TestProgramsParseAsMLIR(t *testing.T) {
	opt := mlirOpt()
	if opt == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("mlir-opt not installed; .ci/run installs mlir-19-tools")
		}
		t.Skip("mlir-opt not installed (apt-get install mlir-19-tools)")
	}
	b, res := compileTo(t, Options{Model: golden.Path(t, "tiny-sd15"), Buckets: bucket64})
	for _, p := range res.Manifest.Programs {
		out, err := exec.Command(opt, "--allow-unregistered-dialect", b.Path(p.File), "-o", os.DevNull).CombinedOutput()
		if err != nil {
			t.Errorf("%s: mlir-opt: %v\n%s", p.Name, err, out)
		}
	}
	// The check is not vacuous: a use with the wrong type is refused.
	bad := filepath.Join(t.TempDir(), "bad.mlir")
	text, err := os.ReadFile(b.Path(res.Manifest.Programs[0].File))
	if err != nil {
		t.Fatal(err)
	}
	text = bytes.Replace(text, []byte(`"stablehlo.return"(%`), []byte(fmt.Sprintf(`"stablehlo.return"(%%undefined_%d, %%`, 1)), 1)
	if err := os.WriteFile(bad, text, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(opt, "--allow-unregistered-dialect", bad, "-o", os.DevNull).CombinedOutput(); err == nil {
		t.Errorf("mlir-opt accepted a program returning an undefined value:\n%s", out)
	}
}
