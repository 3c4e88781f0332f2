package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf8"
)

// Tensor is one tensor to write: Data holds little-endian elements. A nil or
// empty Shape is a 0-d tensor (one element).
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
	// Load, when Data is nil, produces the bytes at the moment the tensor
	// is written, so a large model streams through the writer one tensor at
	// a time instead of being held whole in memory.
	Load func() ([]byte, error)
}

// size is the tensor's byte length: len(Data), or what Load must return.
func (t Tensor) size(count uint64) int64 {
	if t.Data == nil && t.Load != nil {
		return int64(count * uint64(t.DType.Size()))
	}
	return int64(len(t.Data))
}

// Write stores tensors at path atomically: it writes a temporary file in the
// same directory, syncs it and renames it into place, so a reader never sees a
// half-written file and an existing file is replaced only on success. The new
// file keeps the permissions of the file it replaces (0644 for a new one).
// See Encode for the layout.
func Write(path string, tensors []Tensor, metadata map[string]string) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("safetensors: write %s: %w", path, err)
		}
	}()
	// Validate before touching the file system.
	if _, _, err := prepare(tensors, metadata); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		if !st.Mode().IsRegular() {
			return errors.New("not a regular file")
		}
		perm = st.Mode().Perm()
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := Encode(tmp, tensors, metadata); err != nil {
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable; not every system can sync a directory.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// prepare validates the tensors and returns them in file order with the
// padded JSON header.
func prepare(tensors []Tensor, metadata map[string]string) ([]Tensor, []byte, error) {
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
		}
	}
	// Like the reference writer: larger elements first, then by name, so
	// that every tensor is naturally aligned in the file (the header is
	// padded to 8 bytes).
	sorted := append([]Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool {
		si, sj := sorted[i].DType.Size(), sorted[j].DType.Size()
		if si != sj {
			return si > sj
		}
		return sorted[i].Name < sorted[j].Name
	})
	seen := make(map[string]bool, len(sorted))
	header := make(map[string]any, len(sorted)+1)
	if len(metadata) > 0 {
		header[metadataKey] = metadata
	}
	var offset int64
	for _, t := range sorted {
		if seen[t.Name] {
			return nil, nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		if t.Name == metadataKey {
			return nil, nil, fmt.Errorf("tensor name %q is reserved", t.Name)
		}
		if !utf8.ValidString(t.Name) {
			return nil, nil, fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
		}
		if t.DType.Size() == 0 {
			return nil, nil, fmt.Errorf("tensor %q: unsupported dtype %q", t.Name, string(t.DType))
		}
		dims := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = int64(d)
		}
		_, count, err := checkShape(dims, uint64(t.DType.Size()))
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		size := t.size(count)
		if want := count * uint64(t.DType.Size()); want != uint64(size) {
			return nil, nil, fmt.Errorf("tensor %q: %d bytes for shape %v of %s, want %d", t.Name, size, t.Shape, t.DType, want)
		}
		if offset > math.MaxInt64-size {
			return nil, nil, errors.New("tensors too large")
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = map[string]any{
			"dtype":        t.DType,
			"shape":        shape,
			"data_offsets": [2]int64{offset, offset + size},
		}
		offset += size
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return nil, nil, err
	}
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	if len(hdr) > MaxHeaderSize {
		return nil, nil, fmt.Errorf("header of %d bytes exceeds the %d-byte limit", len(hdr), MaxHeaderSize)
	}
	return sorted, hdr, nil
}

// Encode writes a safetensors image to w: the 8-byte little-endian header
// length, the JSON header (keys sorted, padded with spaces to a multiple of 8
// bytes) and the tensor data with no gaps, larger dtypes first and then by
// name, so every tensor is aligned to its element size. It fails before
// writing anything if a tensor is invalid (duplicate or reserved name, unknown
// dtype, negative dimension, Data length not shape × dtype size).
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	sorted, hdr, err := prepare(tensors, metadata)
	if err != nil {
		return err
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, t := range sorted {
		data := t.Data
		if data == nil && t.Load != nil {
			var err error
			if data, err = t.Load(); err != nil {
				return fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			want := int64(numElements(t.Shape) * t.DType.Size())
			if int64(len(data)) != want {
				return fmt.Errorf("tensor %q: Load gave %d bytes, want %d", t.Name, len(data), want)
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}

func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Float32Tensor builds an F32 Tensor from values.
func Float32Tensor(name string, shape []int, values []float32) Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, DType: F32, Shape: shape, Data: data}
}

// Float16Tensor builds an F16 Tensor from values rounded with Float32ToHalf.
func Float16Tensor(name string, shape []int, values []float32) Tensor {
	data := make([]byte, 2*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint16(data[2*i:], Float32ToHalf(v))
	}
	return Tensor{Name: name, DType: F16, Shape: shape, Data: data}
}
