// Package safetensors reads and writes the safetensors format that every
// Stable Diffusion checkpoint, ControlNet, LoRA and our own bundles use.
//
// Reading is memory-mapped: tensor bytes stay in the page cache until a
// caller asks for them, so opening a multi-gigabyte checkpoint costs only the
// header parse. The header is validated strictly, because a checkpoint is
// untrusted input: a size limit, UTF-8 JSON with nothing after the object, no
// duplicate names or fields, known dtypes, non-negative dimensions whose
// product cannot overflow, sizes that match shape × dtype, and offsets that tile
// the data section exactly (in bounds, no overlap, no gap, nothing after the
// last tensor), the rules of the reference implementation. Every error names
// the file and, where one is at fault, the tensor.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header, as the reference implementation
// does (100 MB, decimal); a real SD checkpoint header is well under 1 MB.
const MaxHeaderSize = 100_000_000

// DType is a safetensors element type as written in the header.
type DType string

// The element types this package understands.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"

	U64 DType = "U64"
	U32 DType = "U32"
	U16 DType = "U16"
	// F8E4M3 is float8 e4m3fn (no infinities, NaN = S.1111.111), F8E5M2 is
	// float8 e5m2 (the top byte of an IEEE binary16), as in torch.
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

// Size returns the element size in bytes, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case I8, U8, Bool, F8E4M3, F8E5M2:
		return 1
	}
	return 0
}

// IsFloat reports whether DecodeFloat32 accepts the dtype.
func (d DType) IsFloat() bool {
	switch d {
	case F64, F32, F16, BF16, F8E4M3, F8E5M2:
		return true
	}
	return false
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	// Begin and End are byte offsets relative to the start of the data
	// section (just after the header), as the format defines them.
	Begin, End int64
}

// NumElements is the product of the shape (1 for a 0-d tensor).
func (ti TensorInfo) NumElements() int {
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	return n
}

// File is an opened safetensors file. Its methods are safe for concurrent
// readers. Slices returned by Raw alias the mapping and are valid until Close;
// after Close, Raw, Float32s and Int64s return an error.
type File struct {
	path     string
	data     []byte // the tensor data section; nil once closed
	whole    []byte // the whole mapping (or buffer), for unmapping
	mapped   bool
	infos    map[string]TensorInfo
	names    []string
	metadata map[string]string
}

// Open maps path into memory and validates its header.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	if st.Size() < 8 {
		return nil, fmt.Errorf("safetensors: %s: file is %d bytes, shorter than the 8-byte header length", path, st.Size())
	}
	whole, mapped, err := mapFile(fh, st.Size())
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f, err := parse(path, whole)
	if err != nil {
		if mapped {
			unmap(whole)
		}
		return nil, err
	}
	f.mapped = mapped
	return f, nil
}

// Parse validates an in-memory safetensors image. name is used in errors.
// The returned File aliases buf.
func Parse(name string, buf []byte) (*File, error) {
	return parse(name, buf)
}

func parse(path string, whole []byte) (*File, error) {
	if len(whole) < 8 {
		return nil, fmt.Errorf("safetensors: %s: %d bytes, shorter than the 8-byte header length", path, len(whole))
	}
	n := binary.LittleEndian.Uint64(whole[:8])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: %s: header length %d exceeds the %d-byte limit", path, n, MaxHeaderSize)
	}
	if n > uint64(len(whole)-8) {
		return nil, fmt.Errorf("safetensors: %s: header length %d runs past the end of the file (%d bytes): truncated?", path, n, len(whole))
	}
	header := whole[8 : 8+n]
	f := &File{path: path, whole: whole, data: whole[8+n:], infos: map[string]TensorInfo{}}
	if err := f.parseHeader(header); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return f, nil
}

// parseHeader walks the JSON object token by token so duplicate keys are seen
// (encoding/json into a map would silently keep the last one).
//
// The rules follow the reference implementation (huggingface/safetensors,
// Metadata::validate and SafeTensors::read_metadata): the header is UTF-8
// JSON, an object whose values are tensor entries plus an optional
// "__metadata__" string map, followed only by whitespace (writers pad with
// spaces to 8 bytes). Entries need dtype, shape and data_offsets; other
// fields are ignored as the reference does. We are stricter than the reference
// in rejecting duplicate keys (it keeps the last one silently).
func (f *File) parseHeader(header []byte) error {
	if !utf8.Valid(header) {
		return errors.New("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("header is not valid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("header is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("header is not valid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("header is not valid JSON: object key is not a string")
		}
		if seen[key] {
			if key == metadataKey {
				return fmt.Errorf("duplicate %s in header", metadataKey)
			}
			return fmt.Errorf("tensor %q: duplicate entry in header", key)
		}
		seen[key] = true
		if key == metadataKey {
			md, err := parseMetadata(dec)
			if err != nil {
				return fmt.Errorf("%s: %w", metadataKey, err)
			}
			f.metadata = md
			continue
		}
		info, err := parseEntry(dec, key)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		f.infos[key] = info
		f.names = append(f.names, key)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return fmt.Errorf("header is not valid JSON: %w", err)
	}
	// Only JSON whitespace may follow: the format pads the header with spaces.
	for _, c := range header[dec.InputOffset():] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return fmt.Errorf("header has trailing data after the JSON object at byte %d", dec.InputOffset())
		}
	}
	sort.Strings(f.names)
	return f.checkLayout()
}

const metadataKey = "__metadata__"

// readRaw reads the next JSON value whole.
func readRaw(dec *json.Decoder) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	return raw, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// openObject consumes the '{' of an object value; null reports false.
func openObject(dec *json.Decoder, what string) (bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return false, fmt.Errorf("header is not valid JSON: %w", err)
	}
	if tok == nil {
		return false, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return false, fmt.Errorf("%s must be a JSON object, not %v", what, tok)
	}
	return true, nil
}

// objectKey reads the next key of an object (after dec.More reported one).
func objectKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", fmt.Errorf("header is not valid JSON: %w", err)
	}
	key, ok := tok.(string)
	if !ok {
		return "", errors.New("header is not valid JSON: object key is not a string")
	}
	return key, nil
}

// closeObject consumes the '}' of an object.
func closeObject(dec *json.Decoder) error {
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("header is not valid JSON: %w", err)
	}
	return nil
}

// parseMetadata reads the "__metadata__" value: null or an object mapping
// strings to strings, without duplicate keys.
func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	ok, err := openObject(dec, "value")
	if err != nil || !ok {
		return nil, err
	}
	md := map[string]string{}
	for dec.More() {
		key, err := objectKey(dec)
		if err != nil {
			return nil, err
		}
		if _, dup := md[key]; dup {
			return nil, fmt.Errorf("duplicate key %q", key)
		}
		raw, err := readRaw(dec)
		if err != nil {
			return nil, err
		}
		var v string
		if isNull(raw) || json.Unmarshal(raw, &v) != nil {
			return nil, fmt.Errorf("key %q: value must be a string, not %s", key, abbrev(raw))
		}
		md[key] = v
	}
	return md, closeObject(dec)
}

// abbrev shortens a JSON value for an error message.
func abbrev(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:37]) + "..."
	}
	return string(raw)
}

// parseEntry reads one tensor entry {"dtype", "shape", "data_offsets"} and
// validates it on its own (the layout across tensors is checkLayout's job).
func parseEntry(dec *json.Decoder, name string) (TensorInfo, error) {
	ok, err := openObject(dec, "entry")
	if err != nil {
		return TensorInfo{}, err
	}
	if !ok {
		return TensorInfo{}, errors.New("entry must be a JSON object, not null")
	}
	var (
		dtype   string
		shape   []int64
		offsets []uint64
		seen    = map[string]bool{}
	)
	for dec.More() {
		key, err := objectKey(dec)
		if err != nil {
			return TensorInfo{}, err
		}
		if seen[key] {
			return TensorInfo{}, fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		raw, err := readRaw(dec)
		if err != nil {
			return TensorInfo{}, err
		}
		var dst any
		switch key {
		case "dtype":
			dst = &dtype
		case "shape":
			dst = &shape
		case "data_offsets":
			dst = &offsets
		default:
			continue // unknown fields are ignored, as by the reference
		}
		if isNull(raw) {
			return TensorInfo{}, fmt.Errorf("field %q is null", key)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return TensorInfo{}, fmt.Errorf("field %q: invalid value %s", key, abbrev(raw))
		}
	}
	if err := closeObject(dec); err != nil {
		return TensorInfo{}, err
	}
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[k] {
			return TensorInfo{}, fmt.Errorf("missing field %q", k)
		}
	}
	return validateEntry(name, DType(dtype), shape, offsets)
}

func validateEntry(name string, dt DType, dims []int64, offsets []uint64) (TensorInfo, error) {
	size := uint64(dt.Size())
	if size == 0 {
		return TensorInfo{}, fmt.Errorf("unsupported dtype %q", string(dt))
	}
	if len(offsets) != 2 {
		return TensorInfo{}, fmt.Errorf("data_offsets must have 2 values, has %d", len(offsets))
	}
	shape, count, err := checkShape(dims, size)
	if err != nil {
		return TensorInfo{}, err
	}
	begin, end := offsets[0], offsets[1]
	if begin > end {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] are reversed", begin, end)
	}
	if end > math.MaxInt64 {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] out of range", begin, end)
	}
	// count·size cannot overflow: checkShape bounds it by MaxInt.
	if want := count * size; end-begin != want {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] hold %d bytes but shape %v of %s needs %d", begin, end, end-begin, dims, dt, want)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: int64(begin), End: int64(end)}, nil
}

// checkShape converts dims to ints and returns the element count. It rejects
// negative dimensions and any shape whose byte size, or whose product of
// non-zero dimensions (what stride arithmetic multiplies), exceeds MaxInt, so
// no later size or stride computation can overflow. shape [] is a 0-d scalar.
func checkShape(dims []int64, size uint64) ([]int, uint64, error) {
	shape := make([]int, len(dims))
	count, strided := uint64(1), size
	for i, d := range dims {
		if d < 0 {
			return nil, 0, fmt.Errorf("negative dimension %d in shape %v", d, dims)
		}
		if d > 0 {
			if strided > uint64(math.MaxInt)/uint64(d) {
				return nil, 0, fmt.Errorf("shape %v is too large", dims)
			}
			strided *= uint64(d)
		}
		count *= uint64(d) // ≤ strided/size, no overflow
		shape[i] = int(d)
	}
	return shape, count, nil
}

// checkLayout verifies every tensor lies inside the data section and, as the
// reference implementation requires, that the tensors tile the data section
// exactly: sorted by offset, each starts where the previous ended, the first
// at 0 and the last at the end of the file. So no two tensors share bytes, and
// a file with holes or trailing bytes (a corrupt or mis-sized download) is
// refused rather than half-trusted.
func (f *File) checkLayout() error {
	size := int64(len(f.data))
	byBegin := make([]TensorInfo, 0, len(f.infos))
	for _, name := range f.names {
		ti := f.infos[name]
		if ti.End > size {
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] run past the end of the data section (%d bytes): truncated file?", ti.Name, ti.Begin, ti.End, size)
		}
		byBegin = append(byBegin, ti)
	}
	// f.names is sorted, so the stable sort breaks offset ties by name.
	sort.SliceStable(byBegin, func(i, j int) bool {
		if byBegin[i].Begin != byBegin[j].Begin {
			return byBegin[i].Begin < byBegin[j].Begin
		}
		return byBegin[i].End < byBegin[j].End
	})
	var pos int64
	for i, ti := range byBegin {
		switch {
		case ti.Begin < pos:
			prev := byBegin[i-1]
			return fmt.Errorf("tensors %q and %q overlap (data_offsets [%d, %d] and [%d, %d])", prev.Name, ti.Name, prev.Begin, prev.End, ti.Begin, ti.End)
		case ti.Begin > pos:
			if i == 0 {
				return fmt.Errorf("tensor %q: data_offsets [%d, %d] leave bytes [0, %d] of the data section unused (tensors must cover it without gaps)", ti.Name, ti.Begin, ti.End, ti.Begin)
			}
			prev := byBegin[i-1]
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] leave a gap of %d bytes after tensor %q (tensors must cover the data section without gaps)", ti.Name, ti.Begin, ti.End, ti.Begin-pos, prev.Name)
		}
		pos = ti.End
	}
	if pos != size {
		if len(byBegin) == 0 {
			return fmt.Errorf("no tensors, but %d bytes of data after the header", size)
		}
		last := byBegin[len(byBegin)-1]
		return fmt.Errorf("%d bytes of trailing data after the last tensor %q (data_offsets [%d, %d], data section %d bytes)", size-pos, last.Name, last.Begin, last.End, size)
	}
	return nil
}

// Close releases the mapping. Slices obtained from Raw must not be used after.
func (f *File) Close() error {
	f.data = nil
	if f.mapped {
		f.mapped = false
		return unmap(f.whole)
	}
	return nil
}

// Path is the file's path (or the name given to Parse).
func (f *File) Path() string { return f.path }

// Names lists the tensor names, sorted.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Len is the number of tensors.
func (f *File) Len() int { return len(f.names) }

// Metadata is a copy of the optional __metadata__ map (nil when absent).
func (f *File) Metadata() map[string]string { return maps.Clone(f.metadata) }

// Info describes a tensor. The Shape is the caller's to keep.
func (f *File) Info(name string) (TensorInfo, bool) {
	ti, ok := f.infos[name]
	ti.Shape = slices.Clone(ti.Shape)
	return ti, ok
}

// Raw returns the tensor's little-endian bytes without copying. The slice
// aliases the mapping (read-only memory for Open): do not write to it. Its
// capacity ends with the tensor, so appending to it copies.
func (f *File) Raw(name string) ([]byte, TensorInfo, error) {
	ti, ok := f.Info(name)
	if !ok {
		return nil, TensorInfo{}, fmt.Errorf("safetensors: %s: no tensor %q", f.path, name)
	}
	if f.data == nil {
		return nil, TensorInfo{}, fmt.Errorf("safetensors: %s: tensor %q: file is closed", f.path, name)
	}
	return f.data[ti.Begin:ti.End:ti.End], ti, nil
}

// Float32s decodes a floating-point tensor (F32, F16, BF16, F64, F8_E4M3 or
// F8_E5M2) to float32.
func (f *File) Float32s(name string) ([]float32, []int, error) {
	raw, ti, err := f.Raw(name)
	if err != nil {
		return nil, nil, err
	}
	out, err := DecodeFloat32(raw, ti.DType)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, err)
	}
	return out, ti.Shape, nil
}

// Int64s decodes an integer tensor (I64, I32, I16, I8, U64, U32, U16, U8,
// BOOL) to int64. A U64 value above MaxInt64 is an error.
func (f *File) Int64s(name string) ([]int64, []int, error) {
	raw, ti, err := f.Raw(name)
	if err != nil {
		return nil, nil, err
	}
	n := ti.NumElements()
	out := make([]int64, n)
	switch ti.DType {
	case I64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	case U64:
		for i := range out {
			v := binary.LittleEndian.Uint64(raw[8*i:])
			if v > math.MaxInt64 {
				return nil, nil, fmt.Errorf("safetensors: %s: tensor %q: U64 element %d = %d overflows int64", f.path, name, i, v)
			}
			out[i] = int64(v)
		}
	case I32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	case U32:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case I16:
		for i := range out {
			out[i] = int64(int16(binary.LittleEndian.Uint16(raw[2*i:])))
		}
	case U16:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case I8:
		for i := range out {
			out[i] = int64(int8(raw[i]))
		}
	case U8, Bool:
		for i := range out {
			out[i] = int64(raw[i])
		}
	default:
		return nil, nil, fmt.Errorf("safetensors: %s: tensor %q is %s, not an integer type", f.path, name, ti.DType)
	}
	return out, ti.Shape, nil
}

// DecodeFloat32 converts little-endian floating-point bytes to float32.
func DecodeFloat32(raw []byte, dt DType) ([]float32, error) {
	if !dt.IsFloat() {
		return nil, fmt.Errorf("%q is not a floating-point type", string(dt))
	}
	if len(raw)%dt.Size() != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of %s elements", len(raw), dt)
	}
	out := make([]float32, len(raw)/dt.Size())
	decodeInto(out, raw, dt)
	return out, nil
}

// DecodeFloat32Into is DecodeFloat32 writing into out, which must hold
// exactly the elements of raw: loaders decode straight into a device buffer
// instead of making a garbage copy of every weight.
func DecodeFloat32Into(out []float32, raw []byte, dt DType) error {
	if !dt.IsFloat() {
		return fmt.Errorf("%q is not a floating-point type", string(dt))
	}
	if len(raw) != len(out)*dt.Size() {
		return fmt.Errorf("%d bytes of %s do not fill %d float32 values", len(raw), dt, len(out))
	}
	decodeInto(out, raw, dt)
	return nil
}

// decodeInto converts; the caller has checked dt and the lengths.
func decodeInto(out []float32, raw []byte, dt DType) {
	switch dt {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	case F8E5M2:
		for i, b := range raw {
			out[i] = HalfToFloat32(uint16(b) << 8)
		}
	case F8E4M3:
		for i, b := range raw {
			out[i] = E4M3ToFloat32(b)
		}
	}
}
