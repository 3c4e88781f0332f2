package checkpoint

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

var _ nn.Source = (*Source)(nil)

// store is what the readers need of an opened safetensors file. It is
// *safetensors.File in production; the fuzz tests supply header-only fakes
// so that key layouts can be explored without tensor data.
type store interface {
	Path() string
	Names() []string
	Info(name string) (safetensors.TensorInfo, bool)
	Raw(name string) ([]byte, safetensors.TensorInfo, error)
}

// keyspace is the set of stored tensors a component's weights are drawn
// from: one file, or the shards of a sharded checkpoint.
type keyspace struct {
	desc  string           // the file or index path, for errors
	where map[string]store // stored key -> the file holding it
	keys  []string         // sorted
}

func fileKeyspace(st store) *keyspace {
	ks := &keyspace{desc: st.Path(), where: map[string]store{}}
	for _, k := range st.Names() {
		ks.where[k] = st
	}
	ks.finish()
	return ks
}

func (ks *keyspace) finish() {
	ks.keys = make([]string, 0, len(ks.where))
	for k := range ks.where {
		ks.keys = append(ks.keys, k)
	}
	sort.Strings(ks.keys)
}

func (ks *keyspace) info(key string) (safetensors.TensorInfo, bool) {
	st, ok := ks.where[key]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	return st.Info(key)
}

func (ks *keyspace) has(key string) bool {
	_, ok := ks.where[key]
	return ok
}

// fileOf names the file holding key (the index path for an unknown key).
func (ks *keyspace) fileOf(key string) string {
	if st, ok := ks.where[key]; ok {
		return st.Path()
	}
	return ks.desc
}

// ref says where a diffusers-named weight is stored: a key and, for fused
// tensors (OpenCLIP's in_proj), which of parts equal row blocks it is.
type ref struct {
	key   string
	part  int
	parts int // 0 or 1: the whole tensor
}

// translator maps a diffusers name to candidate stored locations, the
// first present one winning (legacy names come second).
type translator func(name string) []ref

// entry is one weight of a Source: a byte range of a stored tensor and the
// diffusers shape it is served as. Both the 1×1-conv↔linear reshape and the
// row split of fused projections keep the bytes contiguous, so serving a
// weight never copies.
type entry struct {
	file  store
	key   string
	dtype safetensors.DType
	shape []int
	begin int
	end   int
}

// Source serves one component's weights by their diffusers names. It
// implements nn.Source; tensor bytes alias the memory-mapped checkpoint and
// are read only when a caller asks for them. They must not be modified, and
// they are invalid once the owning Model or ControlNet is closed.
type Source struct {
	component string
	entries   map[string]entry
	names     []string
}

// Tensor implements nn.Source.
func (s *Source) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	e, ok := s.entries[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("checkpoint: %s has no weight %q", s.component, name)
	}
	raw, _, err := e.file.Raw(e.key)
	if err != nil {
		return "", nil, nil, fmt.Errorf("checkpoint: %s weight %q: %w", s.component, name, err)
	}
	if e.end > len(raw) {
		return "", nil, nil, fmt.Errorf("checkpoint: %s weight %q: %s: tensor %q is shorter than its header says", s.component, name, e.file.Path(), e.key)
	}
	return e.dtype, slices.Clone(e.shape), raw[e.begin:e.end:e.end], nil
}

// Has implements nn.Source.
func (s *Source) Has(name string) bool {
	_, ok := s.entries[name]
	return ok
}

// Names lists every weight, sorted.
func (s *Source) Names() []string { return slices.Clone(s.names) }

// Len is the number of weights.
func (s *Source) Len() int { return len(s.names) }

// Info gives a weight's stored dtype and diffusers shape without reading it.
func (s *Source) Info(name string) (safetensors.DType, []int, bool) {
	e, ok := s.entries[name]
	if !ok {
		return "", nil, false
	}
	return e.dtype, slices.Clone(e.shape), true
}

// Origin says which file and stored key a weight comes from, for messages
// that must point users at their own checkpoint's names.
func (s *Source) Origin(name string) (file, key string, ok bool) {
	e, ok := s.entries[name]
	if !ok {
		return "", "", false
	}
	return e.file.Path(), e.key, true
}

// maxListed bounds how many problems one error spells out; a wrong
// architecture produces hundreds and the first few say enough.
const maxListed = 8

// problems collects what is wrong with a checkpoint so that one error can
// report several missing or mismatched tensors at once.
type problems struct {
	what string
	list []string
}

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	if len(p.list) == 1 {
		return fmt.Errorf("%s: %s", p.what, p.list[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", p.what, len(p.list))
	for i, s := range p.list {
		if i == maxListed {
			fmt.Fprintf(&b, "\n\t... and %d more", len(p.list)-maxListed)
			break
		}
		b.WriteString("\n\t")
		b.WriteString(s)
	}
	return fmt.Errorf("%s", b.String())
}

// bind builds a component's Source: every weight the config needs
// (expected, from the kernels' WeightShapes) is looked up through tr, and
// must be present with a float dtype and the expected shape. Stored keys
// used are recorded in used, so the caller can report the ones nothing
// reads.
func bind(component string, ks *keyspace, expected map[string][]int, tr translator, used map[string]bool) (*Source, error) {
	names := make([]string, 0, len(expected))
	for n := range expected {
		names = append(names, n)
	}
	sort.Strings(names)
	src := &Source{component: component, entries: make(map[string]entry, len(names)), names: names}
	probs := problems{what: fmt.Sprintf("%s: %s", ks.desc, component)}
	for _, name := range names {
		want := expected[name]
		cands := tr(name)
		var r ref
		found := false
		for _, c := range cands {
			if ks.has(c.key) {
				r, found = c, true
				break
			}
		}
		if !found {
			if len(cands) == 0 {
				probs.add("weight %s has no stored name in this layout", name)
			} else if cands[0].key == name {
				probs.add("tensor %s is missing", name)
			} else {
				probs.add("tensor %s (diffusers %s) is missing", cands[0].key, name)
			}
			continue
		}
		info, _ := ks.info(r.key)
		label := r.key
		if r.key != name {
			label = fmt.Sprintf("%s (diffusers %s)", r.key, name)
		}
		if !info.DType.IsFloat() {
			probs.add("tensor %s has dtype %s, want a float type", label, info.DType)
			continue
		}
		begin, end, ok := fit(info, r, want)
		if !ok {
			if r.parts > 1 {
				probs.add("tensor %s has shape %v, which does not split into %d parts of %v as the config needs", label, info.Shape, r.parts, want)
			} else {
				probs.add("tensor %s has shape %v, the config needs %v", label, info.Shape, want)
			}
			continue
		}
		used[r.key] = true
		src.entries[name] = entry{file: ks.where[r.key], key: r.key, dtype: info.DType, shape: slices.Clone(want), begin: begin, end: end}
	}
	if err := probs.err(); err != nil {
		return nil, err
	}
	return src, nil
}

// fit checks that the stored tensor (or the row block r selects) can be
// served as shape want, and returns the byte range. Two shapes are served
// as each other: [out, in, 1, 1] and [out, in] hold the same bytes, and the
// original checkpoints store some linear layers (the VAE attention) as 1×1
// convolutions.
func fit(info safetensors.TensorInfo, r ref, want []int) (begin, end int, ok bool) {
	shape := info.Shape
	size := info.NumElements() * info.DType.Size()
	begin, end = 0, size
	if r.parts > 1 {
		if len(shape) == 0 || shape[0] == 0 || shape[0]%r.parts != 0 || r.part < 0 || r.part >= r.parts {
			return 0, 0, false
		}
		rows := shape[0] / r.parts
		block := size / r.parts
		begin, end = r.part*block, (r.part+1)*block
		shape = append([]int{rows}, shape[1:]...)
	}
	if slices.Equal(squeeze11(shape), squeeze11(want)) {
		return begin, end, true
	}
	return 0, 0, false
}

// squeeze11 drops the trailing 1×1 of a rank-4 kernel shape.
func squeeze11(s []int) []int {
	if len(s) == 4 && s[2] == 1 && s[3] == 1 {
		return s[:2]
	}
	return s
}
