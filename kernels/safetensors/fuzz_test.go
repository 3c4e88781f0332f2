package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary images to Parse. It must never panic; an error
// must name the file; an accepted file must have every tensor inside the
// data section, tiling it exactly, decodable, and must survive Encode → Parse
// unchanged. Seeds: testdata/fuzz/FuzzParse plus the crafted test files.
func FuzzParse(f *testing.F) {
	for _, tc := range rejections {
		f.Add(tc.img)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, sampleTensors(), map[string]string{"format": "pt"}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())

	const name = "fuzz.safetensors"
	f.Fuzz(func(t *testing.T, img []byte) {
		file, err := Parse(name, img)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		n := int64(len(img)) - int64(len(file.data))
		var total int64
		var tensors []Tensor
		names := file.Names()
		if !slices.IsSorted(names) || len(names) != file.Len() {
			t.Fatalf("names %v", names)
		}
		for _, tn := range names {
			raw, ti, err := file.Raw(tn)
			if err != nil {
				t.Fatal(err)
			}
			if ti.Begin < 0 || ti.Begin > ti.End || n+ti.End > int64(len(img)) {
				t.Fatalf("%q: offsets [%d, %d] out of bounds (%d-byte image, data at %d)", tn, ti.Begin, ti.End, len(img), n)
			}
			if int64(len(raw)) != ti.End-ti.Begin || len(raw) != ti.NumElements()*ti.DType.Size() {
				t.Fatalf("%q: %d raw bytes for %+v", tn, len(raw), ti)
			}
			if len(raw) > 0 && &raw[0] != &img[n+ti.Begin] {
				t.Fatalf("%q: Raw does not alias the image", tn)
			}
			total += ti.End - ti.Begin
			var count int
			if ti.DType.IsFloat() {
				v, shape, err := file.Float32s(tn)
				if err != nil || !slices.Equal(shape, ti.Shape) {
					t.Fatalf("%q: Float32s: %v", tn, err)
				}
				count = len(v)
			} else {
				v, shape, err := file.Int64s(tn)
				if err != nil && !(ti.DType == U64 && strings.Contains(err.Error(), "overflows")) {
					t.Fatalf("%q: Int64s: %v", tn, err)
				}
				if err == nil && !slices.Equal(shape, ti.Shape) {
					t.Fatalf("%q: Int64s shape %v, info %v", tn, shape, ti.Shape)
				}
				count = ti.NumElements()
				if err == nil {
					count = len(v)
				}
			}
			if count != ti.NumElements() {
				t.Fatalf("%q: decoded %d elements, want %d", tn, count, ti.NumElements())
			}
			tensors = append(tensors, Tensor{Name: tn, DType: ti.DType, Shape: ti.Shape, Data: raw})
		}
		if total != int64(len(file.data)) {
			t.Fatalf("tensors cover %d of %d data bytes", total, len(file.data))
		}

		var out bytes.Buffer
		if err := Encode(&out, tensors, file.Metadata()); err != nil {
			t.Fatalf("re-encoding an accepted file: %v", err)
		}
		again, err := Parse(name, out.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file rejected: %v", err)
		}
		if !slices.Equal(again.Names(), names) || len(again.Metadata()) != len(file.Metadata()) {
			t.Fatalf("re-encoded names %v metadata %v, want %v %v", again.Names(), again.Metadata(), names, file.Metadata())
		}
		for k, v := range file.Metadata() {
			if again.Metadata()[k] != v {
				t.Fatalf("re-encoded metadata %q = %q, want %q", k, again.Metadata()[k], v)
			}
		}
		for _, want := range tensors {
			raw, ti, _ := again.Raw(want.Name)
			if ti.DType != want.DType || !slices.Equal(ti.Shape, want.Shape) || !bytes.Equal(raw, want.Data) {
				t.Fatalf("re-encoded %q differs", want.Name)
			}
		}
	})
}

// The checked-in seeds say by name whether they are valid.
func TestFuzzSeedCorpus(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed corpus: %v", err)
	}
	for _, p := range paths {
		text, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		body, ok := strings.CutPrefix(string(text), "go test fuzz v1\n[]byte(")
		body, ok2 := strings.CutSuffix(strings.TrimSpace(body), ")")
		img, err := strconv.Unquote(body)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s: not a go test fuzz v1 []byte file", p)
		}
		_, err = Parse(p, []byte(img))
		switch base := filepath.Base(p); {
		case strings.HasPrefix(base, "valid_") && err != nil:
			t.Errorf("%s rejected: %v", base, err)
		case strings.HasPrefix(base, "invalid_") && err == nil:
			t.Errorf("%s accepted", base)
		}
	}
}
