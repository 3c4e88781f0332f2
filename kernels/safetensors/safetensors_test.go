package safetensors

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// image builds a safetensors image from a raw JSON header and data bytes.
func image(header string, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

// withLength builds an image whose 8-byte header length is n, whatever follows.
func withLength(n uint64, rest string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

func entry(dtype, shape, offsets string) string {
	return fmt.Sprintf(`{"dtype":%q,"shape":%s,"data_offsets":%s}`, dtype, shape, offsets)
}

const w8 = `"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`

var rejections = []struct {
	name   string
	img    []byte
	tensor string // a tensor the error must name ("" when none applies)
	want   string // a phrase of the error
}{
	{"empty file", nil, "", "shorter than the 8-byte header length"},
	{"truncated length", []byte{8, 0, 0}, "", "shorter than the 8-byte header length"},
	{"header length past EOF", withLength(1000, `{}`), "", "runs past the end of the file"},
	{"header length 2^64-1", withLength(math.MaxUint64, `{}`), "", "exceeds"},
	{"header too big", withLength(MaxHeaderSize+1, `{}`), "", "exceeds the 100000000-byte limit"},
	{"truncated data", image(`{`+w8+`}`, make([]byte, 5)), "w", "run past the end of the data section"},
	{"truncated header JSON", image(`{"w":{"dtype":"F32",`, nil), "w", "not valid JSON"},
	{"invalid JSON", image(`{"w" 1}`, nil), "", "not valid JSON"},
	{"invalid JSON value", image(`{"w":{"dtype":F32}}`, nil), "w", "not valid JSON"},
	{"empty header", image(``, nil), "", "not valid JSON"},
	{"blank header", image(`        `, nil), "", "not valid JSON"},
	{"invalid UTF-8", image("{\"w\xff\":"+entry("F32", "[1]", "[0,4]")+"}", make([]byte, 4)), "", "not valid UTF-8"},
	{"not an object: array", image(`[1,2]`, nil), "", "not a JSON object"},
	{"not an object: string", image(`"abc"`, nil), "", "not a JSON object"},
	{"not an object: null", image(`null`, nil), "", "not a JSON object"},
	{"not an object: number", image(`5`, nil), "", "not a JSON object"},
	{"key not a string", image(`{1:2}`, nil), "", "not valid JSON"},
	{"trailing number", image(`{} 5`, nil), "", "trailing data"},
	{"trailing string", image(`{}"x"`, nil), "", "trailing data"},
	{"trailing object", image(`{}{}`, nil), "", "trailing data"},
	{"trailing garbage", image(`{}x`, nil), "", "trailing data"},
	{"trailing NUL padding", image("{}\x00\x00", nil), "", "trailing data"},
	{"trailing non-JSON space", image("{}\v\f", nil), "", "trailing data"},
	{"duplicate names", image(`{"w":`+entry("F32", "[1]", "[0,4]")+`,"w":`+entry("F32", "[1]", "[4,8]")+`}`, make([]byte, 8)), "w", "duplicate entry"},
	{"duplicate names via escape", image(`{"w":`+entry("F32", "[1]", "[0,4]")+`,"\u0077":`+entry("F32", "[1]", "[4,8]")+`}`, make([]byte, 8)), "w", "duplicate entry"},
	{"duplicate metadata", image(`{"__metadata__":{},"__metadata__":{}}`, nil), "", "duplicate __metadata__"},
	{"duplicate field", image(`{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `duplicate field "dtype"`},
	{"overlapping tensors", image(`{"a":`+entry("F32", "[2]", "[0,8]")+`,"b":`+entry("F32", "[2]", "[4,12]")+`}`, make([]byte, 12)), "b", "overlap"},
	{"same offsets", image(`{"a":`+entry("F32", "[1]", "[0,4]")+`,"b":`+entry("I32", "[1]", "[0,4]")+`}`, make([]byte, 4)), "b", "overlap"},
	{"empty tensor inside another", image(`{"a":`+entry("F32", "[2]", "[0,8]")+`,"e":`+entry("F32", "[0]", "[4,4]")+`}`, make([]byte, 8)), "e", "overlap"},
	{"gap between tensors", image(`{"a":`+entry("F32", "[1]", "[0,4]")+`,"b":`+entry("F32", "[1]", "[8,12]")+`}`, make([]byte, 12)), "b", "gap of 4 bytes"},
	{"gap at start", image(`{"b":`+entry("F32", "[1]", "[4,8]")+`}`, make([]byte, 8)), "b", "unused"},
	{"trailing bytes after data", image(`{`+w8+`}`, make([]byte, 12)), "w", "4 bytes of trailing data"},
	{"data without tensors", image(`{}`, make([]byte, 4)), "", "no tensors, but 4 bytes"},
	{"out-of-bounds offsets", image(`{"w":`+entry("F32", "[274877906944]", "[0,1099511627776]")+`}`, make([]byte, 8)), "w", "run past the end"},
	{"offsets past int64", image(`{"w":`+entry("U8", "[1]", "[9223372036854775808,9223372036854775809]")+`}`, nil), "w", "out of range"},
	{"offsets past uint64", image(`{"w":`+entry("U8", "[1]", "[0,18446744073709551616]")+`}`, nil), "w", "data_offsets"},
	{"size mismatch", image(`{"w":`+entry("F32", "[2,2]", "[0,12]")+`}`, make([]byte, 12)), "w", "needs 16"},
	{"size mismatch 0-d", image(`{"w":`+entry("F16", "[]", "[0,4]")+`}`, make([]byte, 4)), "w", "needs 2"},
	{"unknown dtype", image(`{"w":`+entry("F128", "[1]", "[0,16]")+`}`, make([]byte, 16)), "w", `unsupported dtype "F128"`},
	{"lower-case dtype", image(`{"w":`+entry("f32", "[1]", "[0,4]")+`}`, make([]byte, 4)), "w", "unsupported dtype"},
	{"dtype not a string", image(`{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `field "dtype"`},
	{"negative dims", image(`{"w":`+entry("F32", "[-1,-4]", "[0,16]")+`}`, make([]byte, 16)), "w", "negative dimension"},
	{"fractional dim", image(`{"w":`+entry("F32", "[1.5]", "[0,4]")+`}`, make([]byte, 4)), "w", `field "shape"`},
	{"overflowing shape", image(`{"w":`+entry("F32", "[4294967296,4294967296]", "[0,0]")+`}`, nil), "w", "too large"},
	{"overflowing shape with a zero dim", image(`{"w":`+entry("U8", "[0,4294967296,4294967296]", "[0,0]")+`}`, nil), "w", "too large"},
	{"reversed offsets", image(`{"w":`+entry("F32", "[2]", "[8,0]")+`}`, make([]byte, 8)), "w", "reversed"},
	{"negative offset", image(`{"w":`+entry("F32", "[2]", "[-8,0]")+`}`, make([]byte, 8)), "w", `field "data_offsets"`},
	{"three offsets", image(`{"w":`+entry("F32", "[2]", "[0,8,8]")+`}`, make([]byte, 8)), "w", "2 values"},
	{"one offset", image(`{"w":`+entry("F32", "[2]", "[8]")+`}`, make([]byte, 8)), "w", "2 values"},
	{"missing shape", image(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), "w", `missing field "shape"`},
	{"null shape", image(`{"w":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `"shape" is null`},
	{"missing dtype", image(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `missing field "dtype"`},
	{"missing data_offsets", image(`{"w":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), "w", `missing field "data_offsets"`},
	{"entry is a number", image(`{"w":5}`, nil), "w", "must be a JSON object"},
	{"entry is null", image(`{"w":null}`, nil), "w", "must be a JSON object"},
	{"entry is an array", image(`{"w":[0,4]}`, nil), "w", "must be a JSON object"},
	{"metadata value not a string", image(`{"__metadata__":{"a":1}}`, nil), "", `__metadata__: key "a": value must be a string`},
	{"metadata value null", image(`{"__metadata__":{"a":null}}`, nil), "", `__metadata__: key "a": value must be a string`},
	{"metadata is an array", image(`{"__metadata__":["a"]}`, nil), "", "__metadata__: value must be a JSON object"},
	{"metadata duplicate key", image(`{"__metadata__":{"a":"1","a":"2"}}`, nil), "", `__metadata__: duplicate key "a"`},
}

// Every malformed file is refused, by Parse and by Open, with an error that
// names the file and (where one is at fault) the tensor.
func TestRejections(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			check := func(fileName string, f *File, err error) {
				t.Helper()
				if err == nil {
					f.Close()
					t.Fatalf("accepted a bad file")
				}
				msg := err.Error()
				if !strings.Contains(msg, fileName) {
					t.Errorf("error does not name the file %q: %v", fileName, err)
				}
				if tc.tensor != "" && !strings.Contains(msg, fmt.Sprintf("%q", tc.tensor)) {
					t.Errorf("error does not name tensor %q: %v", tc.tensor, err)
				}
				if !strings.Contains(msg, tc.want) {
					t.Errorf("error %q does not say %q", msg, tc.want)
				}
			}
			f, err := Parse("bad-image.safetensors", tc.img)
			check("bad-image.safetensors", f, err)

			path := filepath.Join(dir, fmt.Sprintf("bad%02d.safetensors", i))
			if err := os.WriteFile(path, tc.img, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err = Open(path)
			check(path, f, err)
		})
	}
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.safetensors")
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), path) || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("Open(missing) = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestAcceptedLayouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		img    []byte
		tensor map[string][]int // name -> shape
		md     map[string]string
	}{
		{"no tensors", image(`{}`, nil), nil, nil},
		{"no tensors, padded", image("{}      ", nil), nil, nil},
		{"JSON whitespace everywhere", image(" \t\n{ \"w\" :\r\n"+entry("F32", "[ 2 ]", "[ 0 , 8 ]")+" }\n\t\r ", make([]byte, 8)), map[string][]int{"w": {2}}, nil},
		{"null metadata", image(`{"__metadata__":null}`, nil), nil, nil},
		{"metadata", image(`{"__metadata__":{"format":"pt","x":""},`+w8+`}`, make([]byte, 8)), map[string][]int{"w": {2}}, map[string]string{"format": "pt", "x": ""}},
		{"0-d tensor (LoRA alpha)", image(`{"lora.alpha":`+entry("F32", "[]", "[0,4]")+`}`, make([]byte, 4)), map[string][]int{"lora.alpha": {}}, nil},
		{"empty tensors share an offset", image(`{"a":`+entry("F32", "[0,3]", "[0,0]")+`,"b":`+entry("I64", "[0]", "[0,0]")+`,"c":`+entry("F16", "[1]", "[0,2]")+`,"d":`+entry("U8", "[2,0]", "[2,2]")+`}`, make([]byte, 2)), map[string][]int{"a": {0, 3}, "b": {0}, "c": {1}, "d": {2, 0}}, nil},
		{"unknown fields ignored", image(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":{"x":[1,{}]},"y":null}}`, make([]byte, 8)), map[string][]int{"w": {2}}, nil},
		{"offsets not in key order", image(`{"z":`+entry("F16", "[2]", "[0,4]")+`,"a":`+entry("I32", "[1]", "[4,8]")+`}`, make([]byte, 8)), map[string][]int{"z": {2}, "a": {1}}, nil},
		{"every dtype", image(`{"a":`+entry("F64", "[1]", "[0,8]")+`,"b":`+entry("I64", "[1]", "[8,16]")+`,"c":`+entry("U64", "[1]", "[16,24]")+
			`,"d":`+entry("F32", "[1]", "[24,28]")+`,"e":`+entry("I32", "[1]", "[28,32]")+`,"f":`+entry("U32", "[1]", "[32,36]")+
			`,"g":`+entry("F16", "[1]", "[36,38]")+`,"h":`+entry("BF16", "[1]", "[38,40]")+`,"i":`+entry("I16", "[1]", "[40,42]")+`,"j":`+entry("U16", "[1]", "[42,44]")+
			`,"k":`+entry("I8", "[1]", "[44,45]")+`,"l":`+entry("U8", "[1]", "[45,46]")+`,"m":`+entry("BOOL", "[1]", "[46,47]")+`,"n":`+entry("F8_E4M3", "[1]", "[47,48]")+`,"o":`+entry("F8_E5M2", "[1]", "[48,49]")+`}`, make([]byte, 49)),
			map[string][]int{"a": {1}, "b": {1}, "c": {1}, "d": {1}, "e": {1}, "f": {1}, "g": {1}, "h": {1}, "i": {1}, "j": {1}, "k": {1}, "l": {1}, "m": {1}, "n": {1}, "o": {1}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("ok.safetensors", tc.img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Len() != len(tc.tensor) {
				t.Fatalf("Len = %d, want %d", f.Len(), len(tc.tensor))
			}
			names := f.Names()
			if !slices.IsSorted(names) {
				t.Errorf("Names not sorted: %v", names)
			}
			for name, shape := range tc.tensor {
				raw, ti, err := f.Raw(name)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ti.Shape, shape) || ti.Name != name {
					t.Errorf("%s: info %+v, want shape %v", name, ti, shape)
				}
				if len(raw) != ti.NumElements()*ti.DType.Size() || cap(raw) != len(raw) {
					t.Errorf("%s: raw len %d cap %d, info %+v", name, len(raw), cap(raw), ti)
				}
				var n int
				if ti.DType.IsFloat() {
					v, _, err := f.Float32s(name)
					if err != nil {
						t.Fatal(err)
					}
					n = len(v)
				} else {
					v, _, err := f.Int64s(name)
					if err != nil {
						t.Fatal(err)
					}
					n = len(v)
				}
				if n != ti.NumElements() {
					t.Errorf("%s: decoded %d elements, want %d", name, n, ti.NumElements())
				}
			}
			if md := f.Metadata(); len(md) != len(tc.md) {
				t.Errorf("metadata %v, want %v", md, tc.md)
			} else {
				for k, v := range tc.md {
					if md[k] != v {
						t.Errorf("metadata %v, want %v", md, tc.md)
					}
					md[k] = "changed"
					if f.Metadata()[k] != v {
						t.Error("Metadata shares its map with the File")
					}
				}
			}
		})
	}
}

// A 0-d tensor has shape [] (not nil-vs-missing confusion) and one element.
func TestScalarTensor(t *testing.T) {
	img := image(`{"x.alpha":`+entry("F32", "[]", "[0,4]")+`}`, binary.LittleEndian.AppendUint32(nil, math.Float32bits(8)))
	f, err := Parse("alpha", img)
	if err != nil {
		t.Fatal(err)
	}
	v, shape, err := f.Float32s("x.alpha")
	if err != nil || len(v) != 1 || v[0] != 8 || shape == nil || len(shape) != 0 {
		t.Fatalf("Float32s = %v %#v %v", v, shape, err)
	}
}

func TestDecodeValues(t *testing.T) {
	var data []byte
	data = binary.LittleEndian.AppendUint64(data, math.Float64bits(-2.5))
	data = binary.LittleEndian.AppendUint64(data, uint64(1<<63|5)) // I64 negative
	data = binary.LittleEndian.AppendUint64(data, 1<<40)           // U64
	data = binary.LittleEndian.AppendUint32(data, math.Float32bits(3.25))
	data = binary.LittleEndian.AppendUint32(data, 0xfffffffe) // I32 -2
	data = binary.LittleEndian.AppendUint32(data, 0xfffffffe) // U32
	data = binary.LittleEndian.AppendUint16(data, 0x3c00)     // F16 1
	data = binary.LittleEndian.AppendUint16(data, 0xc0a0)     // BF16 -5
	data = binary.LittleEndian.AppendUint16(data, 0x8000)     // I16
	data = binary.LittleEndian.AppendUint16(data, 0x8000)     // U16
	data = append(data, 0x80, 0xff, 1, 0x44, 0x3c)            // I8, U8, BOOL, E4M3 3, E5M2 1
	img := image(`{"a":`+entry("F64", "[1]", "[0,8]")+`,"b":`+entry("I64", "[1]", "[8,16]")+`,"c":`+entry("U64", "[1]", "[16,24]")+
		`,"d":`+entry("F32", "[1]", "[24,28]")+`,"e":`+entry("I32", "[1]", "[28,32]")+`,"f":`+entry("U32", "[1]", "[32,36]")+
		`,"g":`+entry("F16", "[1]", "[36,38]")+`,"h":`+entry("BF16", "[1]", "[38,40]")+`,"i":`+entry("I16", "[1]", "[40,42]")+`,"j":`+entry("U16", "[1]", "[42,44]")+
		`,"k":`+entry("I8", "[1]", "[44,45]")+`,"l":`+entry("U8", "[1]", "[45,46]")+`,"m":`+entry("BOOL", "[1]", "[46,47]")+`,"n":`+entry("F8_E4M3", "[1]", "[47,48]")+`,"o":`+entry("F8_E5M2", "[1]", "[48,49]")+`}`, data)
	f, err := Parse("values", img)
	if err != nil {
		t.Fatal(err)
	}
	floats := map[string]float32{"a": -2.5, "d": 3.25, "g": 1, "h": -5, "n": 3, "o": 1}
	for name, want := range floats {
		v, _, err := f.Float32s(name)
		if err != nil || v[0] != want {
			t.Errorf("Float32s(%s) = %v, %v; want %v", name, v, err, want)
		}
		if _, _, err := f.Int64s(name); err == nil || !strings.Contains(err.Error(), "not an integer type") {
			t.Errorf("Int64s(%s) on a float tensor: %v", name, err)
		}
	}
	ints := map[string]int64{"b": -(1<<63 - 5), "c": 1 << 40, "e": -2, "f": 0xfffffffe, "i": -32768, "j": 32768, "k": -128, "l": 255, "m": 1}
	for name, want := range ints {
		v, _, err := f.Int64s(name)
		if err != nil || v[0] != want {
			t.Errorf("Int64s(%s) = %v, %v; want %v", name, v, err, want)
		}
		if _, _, err := f.Float32s(name); err == nil || !strings.Contains(err.Error(), "not a floating-point type") || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("Float32s(%s) on an integer tensor: %v", name, err)
		}
	}
}

func TestU64Overflow(t *testing.T) {
	f, err := Parse("u64", image(`{"u":`+entry("U64", "[1]", "[0,8]")+`}`, binary.LittleEndian.AppendUint64(nil, math.MaxUint64)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Int64s("u"); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Fatalf("Int64s = %v", err)
	}
}

func TestDecodeFloat32Errors(t *testing.T) {
	if _, err := DecodeFloat32(make([]byte, 3), F16); err == nil {
		t.Error("odd byte count accepted")
	}
	if _, err := DecodeFloat32(make([]byte, 4), I32); err == nil {
		t.Error("I32 accepted")
	}
	if _, err := DecodeFloat32(make([]byte, 4), "XX"); err == nil || !strings.Contains(err.Error(), "XX") {
		t.Errorf("unknown dtype: %v", err)
	}
}

func TestMissingTensorAndClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := Write(path, []Tensor{Float32Tensor("w", []int{2}, []float32{1, 2})}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Raw("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), path) {
		t.Errorf("Raw(missing) = %v", err)
	}
	// Callers may not corrupt the file's view through returned values.
	ti, _ := f.Info("w")
	ti.Shape[0] = 99
	if ti2, _ := f.Info("w"); ti2.Shape[0] != 2 {
		t.Error("Info shares its Shape with the File")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Raw("w"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Raw after Close = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Raw aliases the mapped file: no copy until a decode is asked for.
func TestRawIsZeroCopy(t *testing.T) {
	img := image(`{`+w8+`}`, make([]byte, 8))
	f, err := Parse("alias", img)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := f.Raw("w")
	if &raw[0] != &img[len(img)-8] {
		t.Error("Raw copied the data")
	}
	raw = append(raw, 1) // must not write into the image past the tensor
	if !bytes.Equal(img[len(img)-8:], make([]byte, 8)) {
		t.Error("append to Raw wrote into the image")
	}
}
