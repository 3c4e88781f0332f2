package checkpoint

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

const (
	singleFile     = "tiny-sd15-single-file-fp16.safetensors"
	controlNetFile = "tiny-controlnet-single-file-fp16.safetensors"
)

// tinyHints are the tiny-sd15 values the weights do not determine.
var tinyHints = Hints{NormNumGroups: 8, AttentionHeads: []int{8}, TextHeads: 4}

// readAll loads every tensor of a safetensors file (copies, so the file
// can be closed).
func readAll(t testing.TB, path string) []safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []safetensors.Tensor
	for _, n := range f.Names() {
		raw, info, err := f.Raw(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Data: bytes.Clone(raw)})
	}
	return out
}

// rewrite writes src's tensors to dst after edit, which may rename (return
// a new name) or drop (return "") each, then appends extra.
func rewrite(t testing.TB, src, dst string, edit func(string) string, extra ...safetensors.Tensor) {
	t.Helper()
	var out []safetensors.Tensor
	for _, tn := range readAll(t, src) {
		if edit != nil {
			tn.Name = edit(tn.Name)
		}
		if tn.Name != "" {
			out = append(out, tn)
		}
	}
	out = append(out, extra...)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(dst, out, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

func f32Tensor(name string, shape []int) safetensors.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: shape, Data: make([]byte, 4*n)}
}

// toHalf rounds little-endian float32 bytes to float16 bytes.
func toHalf(f32 []byte) []byte {
	out := make([]byte, len(f32)/2)
	for i := 0; i < len(f32)/4; i++ {
		h := safetensors.Float32ToHalf(float32frombits(binary.LittleEndian.Uint32(f32[4*i:])))
		binary.LittleEndian.PutUint16(out[2*i:], h)
	}
	return out
}

// assertSameTensors checks that src serves exactly the tensors of the
// reference diffusers file, both ways: same names, same shapes, and bytes
// equal to the reference's (rounded to fp16 when half is set).
func assertSameTensors(t *testing.T, src *Source, refPath string, half bool) {
	t.Helper()
	ref := readAll(t, refPath)
	var want []string
	for _, r := range ref {
		want = append(want, r.Name)
	}
	if got := src.Names(); !slices.Equal(got, want) {
		for _, n := range got {
			if !slices.Contains(want, n) {
				t.Errorf("%s: extra weight %s", refPath, n)
			}
		}
		for _, n := range want {
			if !src.Has(n) {
				t.Errorf("%s: missing weight %s", refPath, n)
			}
		}
		return
	}
	bad := 0
	for _, r := range ref {
		dt, shape, data, err := src.Tensor(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantData, wantDT := r.Data, r.DType
		if half {
			wantData, wantDT = toHalf(r.Data), safetensors.F16
		}
		if dt != wantDT || !slices.Equal(shape, r.Shape) || !bytes.Equal(data, wantData) {
			bad++
			if bad <= 5 {
				file, key, _ := src.Origin(r.Name)
				t.Errorf("%s: %s (from %s in %s): got %s %v, want %s %v, bytes equal %v", refPath, r.Name, key, file, dt, shape, wantDT, r.Shape, bytes.Equal(data, wantData))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d tensors differ", refPath, bad, len(ref))
	}
}

func goldenPath(t testing.TB, elem ...string) string {
	t.Helper()
	return golden.Path(t, elem...)
}

func float32frombits(b uint32) float32 { return math.Float32frombits(b) }
