package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sampleTensors() []Tensor {
	i64 := binary.LittleEndian.AppendUint64(nil, uint64(1<<40+3))
	i64 = binary.LittleEndian.AppendUint64(i64, math.MaxUint64) // -1
	return []Tensor{
		Float32Tensor("unet.conv.weight", []int{2, 3}, []float32{1, -2, 3.5, 0, float32(math.Inf(1)), -0.25}),
		Float16Tensor("te.ln.bias", []int{3}, []float32{1, 65504, -1.0 / 3}),
		{Name: "lora.alpha", DType: F32, Shape: nil, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(8))},
		{Name: "bf", DType: BF16, Shape: []int{1, 1}, Data: []byte{0x80, 0x3f}},
		{Name: "position_ids", DType: I64, Shape: []int{1, 2}, Data: i64},
		{Name: "mask", DType: Bool, Shape: []int{3}, Data: []byte{1, 0, 1}},
		{Name: "empty", DType: F32, Shape: []int{0, 4}, Data: nil},
		{Name: "名前 <&>", DType: U8, Shape: []int{1}, Data: []byte{7}},
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := sampleTensors()
	md := map[string]string{"format": "pt", "note": "a \"quoted\" <value>"}
	var buf bytes.Buffer
	if err := Encode(&buf, in, md); err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	if n := binary.LittleEndian.Uint64(img); n%8 != 0 || img[8] != '{' {
		t.Errorf("header length %d not padded to 8 / header starts %q", n, img[8])
	}
	f, err := Parse("roundtrip", img)
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() != len(in) {
		t.Fatalf("Len %d, want %d", f.Len(), len(in))
	}
	for _, want := range in {
		raw, ti, err := f.Raw(want.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantShape := want.Shape
		if wantShape == nil {
			wantShape = []int{}
		}
		if ti.DType != want.DType || !slices.Equal(ti.Shape, wantShape) || !bytes.Equal(raw, want.Data) {
			t.Errorf("%s: got %+v %v, want %s %v %v", want.Name, ti, raw, want.DType, wantShape, want.Data)
		}
		// Larger dtypes first: every tensor is aligned to its element size
		// within the 8-aligned data section.
		if ti.Begin%int64(ti.DType.Size()) != 0 {
			t.Errorf("%s: offset %d not aligned to %d", want.Name, ti.Begin, ti.DType.Size())
		}
	}
	if got := f.Metadata(); len(got) != 2 || got["format"] != "pt" || got["note"] != md["note"] {
		t.Errorf("metadata %v", got)
	}
	v, _, _ := f.Float32s("te.ln.bias")
	if v[0] != 1 || v[1] != 65504 || v[2] != HalfToFloat32(Float32ToHalf(-1.0/3)) {
		t.Errorf("F16 values %v", v)
	}
	ids, _, _ := f.Int64s("position_ids")
	if ids[0] != 1<<40+3 || ids[1] != -1 {
		t.Errorf("I64 values %v", ids)
	}

	// The output does not depend on the order of the input.
	rev := slices.Clone(in)
	slices.Reverse(rev)
	var buf2 bytes.Buffer
	if err := Encode(&buf2, rev, md); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf2.Bytes(), img) {
		t.Error("Encode output depends on tensor order")
	}
}

func TestEncodeNoTensors(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Same bytes as the reference writer for an empty dict.
	if want := image("{}      ", nil); !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("got %q, want %q", buf.Bytes(), want)
	}
	if _, err := Parse("empty", buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// The reference implementation's serialization test vector.
func TestEncodeMatchesReference(t *testing.T) {
	var buf bytes.Buffer
	err := Encode(&buf, []Tensor{Float32Tensor("attn.0", []int{1, 2, 3}, []float32{0, 1, 2, 3, 4, 5})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := image(`{"attn.0":{"data_offsets":[0,24],"dtype":"F32","shape":[1,2,3]}}`, nil)
	// Our keys come out sorted (encoding/json); the reference keeps struct
	// order, so compare the parsed result rather than the header text.
	f, err := Parse("ref", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint64(buf.Bytes()) != binary.LittleEndian.Uint64(want) {
		t.Errorf("header length %d, reference 64", binary.LittleEndian.Uint64(buf.Bytes()))
	}
	raw, _, _ := f.Raw("attn.0")
	if !bytes.Equal(raw, []byte{0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64}) {
		t.Errorf("data %v", raw)
	}
}

func TestEncodeRejects(t *testing.T) {
	ok := Float32Tensor("a", []int{1}, []float32{1})
	for _, tc := range []struct {
		name    string
		tensors []Tensor
		md      map[string]string
		want    string
	}{
		{"duplicate", []Tensor{ok, ok}, nil, `duplicate tensor name "a"`},
		{"reserved", []Tensor{Float32Tensor("__metadata__", []int{1}, []float32{1})}, nil, "reserved"},
		{"bad UTF-8 name", []Tensor{Float32Tensor("a\xff", []int{1}, []float32{1})}, nil, "UTF-8"},
		{"bad UTF-8 metadata", []Tensor{ok}, map[string]string{"k": "\xff"}, "UTF-8"},
		{"unknown dtype", []Tensor{{Name: "q", DType: "Q4", Shape: []int{1}, Data: []byte{1}}}, nil, `tensor "q": unsupported dtype "Q4"`},
		{"negative dim", []Tensor{{Name: "n", DType: F32, Shape: []int{-1, -4}, Data: make([]byte, 16)}}, nil, `tensor "n": negative dimension`},
		{"size mismatch", []Tensor{{Name: "s", DType: F32, Shape: []int{2, 2}, Data: make([]byte, 12)}}, nil, `tensor "s": 12 bytes`},
		{"overflowing shape", []Tensor{{Name: "o", DType: F32, Shape: []int{1 << 40, 1 << 40}}}, nil, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Encode(&buf, tc.tensors, tc.md)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode error %v, want %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Encode wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	in := sampleTensors()
	if err := Write(path, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v, want only the file (no temp file)", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("new file mode %v, want 0644", st.Mode().Perm())
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range in {
		raw, _, err := f.Raw(want.Name)
		if err != nil || !bytes.Equal(raw, want.Data) {
			t.Errorf("%s: %v %v", want.Name, raw, err)
		}
	}

	// Replace the file while it is still mapped: the old mapping stays
	// valid (rename, not rewrite in place) and the new content is complete.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	repl := []Tensor{Float32Tensor("w", []int{2}, []float32{5, 6})}
	if err := Write(path, repl, nil); err != nil {
		t.Fatal(err)
	}
	if raw, _, err := f.Raw("unet.conv.weight"); err != nil || !bytes.Equal(raw, in[0].Data) {
		t.Errorf("old mapping changed after replace: %v", err)
	}
	f.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("replaced file mode %v, want the old 0600", st.Mode().Perm())
	}
	g, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := g.Float32s("w"); err != nil || !slices.Equal(v, []float32{5, 6}) || g.Len() != 1 {
		t.Errorf("replaced file: %v %v names %v", v, err, g.Names())
	}
	g.Close()

	// A failing write leaves the existing file untouched and no temp file.
	before, _ := os.ReadFile(path)
	bad := []Tensor{{Name: "bad", DType: F32, Shape: []int{3}, Data: make([]byte, 4)}}
	err = Write(path, bad, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("Write(bad) = %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("failed Write changed the existing file")
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"model.safetensors"}) {
		t.Errorf("directory holds %v after a failed write", got)
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	ok := []Tensor{Float32Tensor("a", []int{1}, []float32{1})}
	if err := Write(filepath.Join(dir, "missing", "x.safetensors"), ok, nil); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(sub, ok, nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Write over a directory = %v", err)
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"sub"}) {
		t.Errorf("directory holds %v", got)
	}
}

// Tensors with a Load function stream through the writer and read back
// identical to tensors given as bytes; a Load error aborts the write and
// leaves no file.
func TestWriteStreamingLoad(t *testing.T) {
	dir := t.TempDir()
	eager := Float32Tensor("a", []int{2, 2}, []float32{1, 2, 3, 4})
	lazy := Tensor{Name: "b", DType: F32, Shape: []int{3}, Load: func() ([]byte, error) {
		return Float32Tensor("", []int{3}, []float32{5, 6, 7}).Data, nil
	}}
	path := filepath.Join(dir, "s.safetensors")
	if err := Write(path, []Tensor{eager, lazy}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, _, err := f.Float32s("b"); err != nil || len(v) != 3 || v[0] != 5 || v[2] != 7 {
		t.Errorf("b = %v, %v", v, err)
	}

	bad := filepath.Join(dir, "bad.safetensors")
	failing := Tensor{Name: "c", DType: F32, Shape: []int{1}, Load: func() ([]byte, error) { return nil, errors.New("disk gone") }}
	if err := Write(bad, []Tensor{eager, failing}, nil); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Errorf("failing Load: %v", err)
	}
	short := Tensor{Name: "c", DType: F32, Shape: []int{2}, Load: func() ([]byte, error) { return make([]byte, 4), nil }}
	if err := Write(bad, []Tensor{short}, nil); err == nil {
		t.Error("short Load accepted")
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("failed write left %s", bad)
	}
}

// Release drops pages, not data: the tensor reads back unchanged.
func TestReleaseKeepsData(t *testing.T) {
	vals := make([]float32, 5000) // spans more than one page
	for i := range vals {
		vals[i] = float32(i)
	}
	path := filepath.Join(t.TempDir(), "r.safetensors")
	if err := Write(path, []Tensor{Float32Tensor("w", []int{len(vals)}, vals), Float32Tensor("b", []int{3}, []float32{1, 2, 3})}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Release("w")
	f.Release("missing")
	got, _, err := f.Float32s("w")
	if err != nil || !slices.Equal(got, vals) {
		t.Fatalf("after Release: %v", err)
	}
	if b, _, _ := f.Float32s("b"); !slices.Equal(b, []float32{1, 2, 3}) {
		t.Errorf("neighbour changed: %v", b)
	}
}
