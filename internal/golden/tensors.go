package golden

import (
	"math"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Open maps a golden safetensors file (a path under the golden folder) for
// the rest of the test.
func Open(t testing.TB, elem ...string) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(Path(t, elem...))
	if err != nil {
		t.Fatalf("golden: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Float32s loads a float tensor from a golden safetensors file.
func Float32s(t testing.TB, file, name string) ([]float32, []int) {
	t.Helper()
	f, err := safetensors.Open(Path(t, file))
	if err != nil {
		t.Fatalf("golden: %v", err)
	}
	defer f.Close()
	v, shape, err := f.Float32s(name)
	if err != nil {
		t.Fatalf("golden: %v", err)
	}
	return v, shape
}

// MaxAbsDiff is max |got - want| and max |want|.
func MaxAbsDiff(got, want []float32) (diff, scale float64) {
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > diff || math.IsNaN(d) {
			diff = d
		}
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	return diff, scale
}

// AssertClose fails unless max |got - want| ≤ rel · max(1, max |want|), the
// parity tolerance the issues set for float32 tensors. It logs the measured
// error either way, so test output records how close we are.
func AssertClose(t testing.TB, name string, got, want []float32, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return
	}
	diff, scale := MaxAbsDiff(got, want)
	tol := rel * math.Max(1, scale)
	if !(diff <= tol) {
		t.Errorf("%s: max |diff| %.3g > tolerance %.3g (max |ref| %.3g)", name, diff, tol, scale)
		return
	}
	t.Logf("%s: max |diff| %.3g (tolerance %.3g)", name, diff, tol)
}

// AssertCheckpointShapes fails unless the safetensors file holds exactly the
// tensors of want (names and shapes): nothing missing, nothing extra.
func AssertCheckpointShapes(t testing.TB, path string, want map[string][]int) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatalf("golden: %v", err)
	}
	defer f.Close()
	left := make(map[string][]int, len(want))
	for k, v := range want {
		left[k] = v
	}
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		shape, ok := left[name]
		if !ok {
			t.Errorf("%s: tensor %s %v not in the expected set", path, name, info.Shape)
			continue
		}
		delete(left, name)
		if !slices.Equal(shape, info.Shape) {
			t.Errorf("%s: tensor %s has shape %v, expected %v", path, name, info.Shape, shape)
		}
	}
	for name, shape := range left {
		t.Errorf("%s: expected tensor %s %v is missing", path, name, shape)
	}
}
