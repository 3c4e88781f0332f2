package checkpoint

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// fakeStore is a safetensors header without data: the readers only look
// at names, dtypes and shapes until a weight is asked for, so key layouts
// can be fuzzed without allocating tensors.
type fakeStore struct {
	infos map[string]safetensors.TensorInfo
	names []string
}

// fakeData backs every fake tensor: read-only zeros, allocated by the OS
// lazily, so serving a large fake tensor costs nothing per execution.
var fakeData [8 * fuzzMaxElems]byte

func (f *fakeStore) Path() string    { return "fuzz.safetensors" }
func (f *fakeStore) Names() []string { return slices.Clone(f.names) }
func (f *fakeStore) Info(name string) (safetensors.TensorInfo, bool) {
	ti, ok := f.infos[name]
	ti.Shape = slices.Clone(ti.Shape)
	return ti, ok
}
func (f *fakeStore) Raw(name string) ([]byte, safetensors.TensorInfo, error) {
	ti, ok := f.Info(name)
	if !ok {
		return nil, ti, os.ErrNotExist
	}
	return fakeData[:ti.End-ti.Begin], ti, nil
}

// Limits that keep a fuzz input's (virtual) tensors plausible.
const (
	fuzzMaxTensors = 4096
	fuzzMaxElems   = 1 << 22
)

// parseKeyList reads the fuzz input format, one tensor per line:
// "name dim,dim,... [dtype]" (no dims: a scalar; dtype defaults to F16).
func parseKeyList(data string) *fakeStore {
	f := &fakeStore{infos: map[string]safetensors.TensorInfo{}}
	for _, line := range strings.Split(data, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || len(f.names) >= fuzzMaxTensors {
			continue
		}
		dt := safetensors.F16
		if len(fields) > 2 {
			dt = safetensors.DType(fields[2])
		}
		if dt.Size() == 0 {
			continue
		}
		var shape []int
		elems := 1
		ok := true
		if len(fields) > 1 {
			for _, d := range strings.Split(fields[1], ",") {
				n, err := strconv.Atoi(d)
				if err != nil || n < 0 || n > fuzzMaxElems {
					ok = false
					break
				}
				elems *= n
				if elems > fuzzMaxElems {
					ok = false
					break
				}
				shape = append(shape, n)
			}
		}
		if _, dup := f.infos[fields[0]]; !ok || dup {
			continue
		}
		f.infos[fields[0]] = safetensors.TensorInfo{Name: fields[0], DType: dt, Shape: shape, End: int64(elems * dt.Size())}
		f.names = append(f.names, fields[0])
	}
	sort.Strings(f.names)
	return f
}

// checkSource verifies what a successful open promises: every weight is
// served with its declared shape and exactly its bytes.
func checkSource(t *testing.T, s *Source) {
	for _, n := range s.Names() {
		dt, shape, ok := s.Info(n)
		if !ok {
			t.Fatalf("%s listed but has no info", n)
		}
		gdt, gshape, data, err := s.Tensor(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		elems := 1
		for _, d := range shape {
			elems *= d
		}
		if gdt != dt || !slices.Equal(gshape, shape) || len(data) != elems*dt.Size() {
			t.Fatalf("%s: served %s %v (%d bytes), declared %s %v", n, gdt, gshape, len(data), dt, shape)
		}
	}
}

// FuzzSingleFileKeys feeds arbitrary key layouts (names, shapes, dtypes)
// to the single-file model and ControlNet readers: they must never panic,
// and what they accept must serve consistent tensors.
func FuzzSingleFileKeys(f *testing.F) {
	f.Add([]byte("model.diffusion_model.input_blocks.0.0.weight 8,4,3,3\nmodel.diffusion_model.time_embed.0.weight 32,8\n"))
	f.Add([]byte("time_embed.0.weight 32,8\ninput_blocks.0.0.weight 8,4,3,3\ninput_hint_block.0.weight 4,3,3,3\n"))
	tok := f.TempDir()
	for _, n := range []string{"vocab.json", "merges.txt"} {
		if err := os.WriteFile(filepath.Join(tok, n), nil, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := parseKeyList(string(data))
		// Alternate the hints by input so both the SD defaults and
		// explicit values are explored at the cost of one open each.
		h := Hints{}
		if len(data)%2 == 0 {
			h = tinyHints
		}
		if m, err := openSingleFileModel(st, Options{TokenizerDir: tok, Hints: h}); err == nil {
			for _, c := range []Component{m.UNet, m.VAE, m.TextEncoder} {
				checkSource(t, c.Source)
			}
		}
		if c, err := openSingleFileControlNet(st, Options{Hints: h}); err == nil {
			checkSource(t, c.Source)
		}
	})
}

// FuzzShardIndex: the index parser never panics, and what it accepts
// names only plain .safetensors files, each listed once.
func FuzzShardIndex(f *testing.F) {
	f.Add([]byte(`{"metadata": {"total_size": 10}, "weight_map": {"a": "m-00001-of-00002.safetensors", "b": "m-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "../m.safetensors"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		wm, shards, err := parseShardIndex(data)
		if err != nil {
			return
		}
		if len(shards) == 0 || !slices.IsSorted(shards) || len(slices.Compact(slices.Clone(shards))) != len(shards) {
			t.Fatalf("shards %q", shards)
		}
		for name, s := range wm {
			if _, found := slices.BinarySearch(shards, s); !found {
				t.Fatalf("%s in unlisted shard %q", name, s)
			}
		}
		for _, s := range shards {
			if strings.ContainsAny(s, `/\`) || s == ".." || !strings.HasSuffix(s, ".safetensors") {
				t.Fatalf("accepted shard name %q", s)
			}
		}
	})
}

// The seed corpus holds real layouts (the tiny model and ControlNet, an
// SD2-style OpenCLIP variant, prefixed and with skipped extras): they
// must open, or the fuzzer would only be exploring refusals.
func TestFuzzSeedsOpen(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSingleFileKeys")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := t.TempDir()
	for _, n := range []string{"vocab.json", "merges.txt"} {
		if err := os.WriteFile(filepath.Join(tok, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, lit, ok := strings.Cut(string(raw), "[]byte(")
		if !ok {
			t.Fatalf("%s: not a fuzz corpus file", e.Name())
		}
		data, err := strconv.Unquote(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(lit), ")")))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		st := parseKeyList(data)
		if strings.HasPrefix(e.Name(), "controlnet") {
			c, err := openSingleFileControlNet(st, Options{Hints: tinyHints})
			if err != nil {
				t.Errorf("%s: %v", e.Name(), err)
				continue
			}
			checkSource(t, c.Source)
			continue
		}
		m, err := openSingleFileModel(st, Options{TokenizerDir: tok, Hints: tinyHints})
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		for _, c := range []Component{m.UNet, m.VAE, m.TextEncoder} {
			checkSource(t, c.Source)
		}
	}
}
