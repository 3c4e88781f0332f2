package lora

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Applied is one LoRA file applied at a scale (the user's LoRA weight,
// typically 0 to 1).
type Applied struct {
	File  *File
	Scale float64
}

// Report says what a merge changes.
type Report struct {
	Component Component
	// Targets are the base weights the merge changes, sorted.
	Targets []string
	// Modules counts the LoRA modules applied, over all files.
	Modules int
	// Warnings lists, in lenient mode, the modules that matched no weight,
	// one line each naming the file and the key.
	Warnings []string
}

// Merge applies loras, in order, to the weights of component c. base serves
// the model's weights by diffusers name; shapes lists every weight with its
// stored shape (unet.Config.WeightShapes, clip.Config.WeightShapes, or a
// checkpoint header): kohya's flattened module names are resolved against
// those names, and every LoRA is checked against those shapes before Merge
// returns, so a LoRA for another model fails here, not halfway through a
// compile.
//
// Patched weights are computed when first read, in float64 from the base
// weight (any float dtype) and the LoRA tensors, and served as F32 whatever
// the base dtype: the compiler rounds to fp16 once, afterwards, instead of
// rounding the base and the sum separately. Other weights are the base's
// own bytes. The returned Source reads the LoRA Files lazily; keep them open
// while it is in use.
func Merge(c Component, base nn.Source, shapes map[string][]int, loras []Applied, opts Options) (*Source, Report, error) {
	if base == nil {
		return nil, Report{Component: c}, fmt.Errorf("lora: merge %s: no base weights", c)
	}
	targets, rep, err := plan(c, shapes, loras, opts)
	if err != nil {
		return nil, rep, err
	}
	return &Source{base: base, targets: targets, names: rep.Targets}, rep, nil
}

// plan matches every module of loras to a weight of component c and checks
// it fits; Merge and Unmerged share it, so both accept and refuse exactly
// the same LoRAs.
func plan(c Component, shapes map[string][]int, loras []Applied, opts Options) (map[string]*target, Report, error) {
	rep := Report{Component: c}
	if c != UNet && c != TextEncoder {
		return nil, rep, fmt.Errorf("lora: unknown component %q", c)
	}
	res := newResolver(shapes)
	src := &Source{targets: map[string]*target{}}
	for i, a := range loras {
		if a.File == nil {
			return nil, rep, fmt.Errorf("lora: merge %s: LoRA %d has no file", c, i)
		}
		f := a.File
		if math.IsNaN(a.Scale) || math.IsInf(a.Scale, 0) {
			return nil, rep, fmt.Errorf("lora: %s: scale %v is not finite", f.path, a.Scale)
		}
		var unmatched []string
		total := 0
		patchedBy := map[string]string{} // weight → key, within this file
		for _, m := range f.modules {
			if m.component != c {
				continue
			}
			total++
			name, err := res.weight(m)
			if err != nil {
				return nil, rep, f.errorf(m.key, "%v", err)
			}
			if name == "" {
				unmatched = append(unmatched, m.key)
				continue
			}
			if prev, ok := patchedBy[name]; ok {
				return nil, rep, f.errorf(m.key, "patches weight %q, as %q already does", name, prev)
			}
			patchedBy[name] = m.key
			if err := fit(shapes[name], m); err != nil {
				return nil, rep, f.errorf(m.key, "%s weight %q: %v (a LoRA for another base model?)", c, name, err)
			}
			t := src.targets[name]
			if t == nil {
				t = &target{name: name, shape: slices.Clone(shapes[name])}
				src.targets[name] = t
			}
			t.deltas = append(t.deltas, delta{
				file:   f,
				mod:    m,
				factor: a.Scale * m.alpha / float64(m.rank()),
			})
		}
		if len(unmatched) > 0 {
			if !opts.Lenient {
				more := ""
				if len(unmatched) > 1 {
					more = fmt.Sprintf(" (%d of %d modules unmatched, also %s)", len(unmatched), total, joinShort(unmatched[1:], 3))
				}
				return nil, rep, fmt.Errorf("lora: %s: key %q matches no %s weight%s; lenient mode skips unmatched modules",
					f.path, unmatched[0], c, more)
			}
			if len(unmatched) == total {
				return nil, rep, fmt.Errorf("lora: %s: none of its %d %s modules matches a weight of this model (first: %s): a LoRA for another model?",
					f.path, total, c, strconv.Quote(unmatched[0]))
			}
			for _, k := range unmatched {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: key %q matches no %s weight, skipped", f.path, k, c))
			}
		}
		rep.Modules += total - len(unmatched)
	}
	for name := range src.targets {
		rep.Targets = append(rep.Targets, name)
	}
	sort.Strings(rep.Targets)
	return src.targets, rep, nil
}

// Unmerged is Merge without merging: the same matching and checks, but the
// result is the LoRA modules themselves, to be applied beside their weights
// in the graph (nn.Weights.WithLoRAs), the way PEFT runs an unmerged LoRA.
// The evaluation's reference uses it. The returned source serves each
// module's down and up tensors as F32 and reads the Files lazily; keep them
// open while it is in use.
func Unmerged(c Component, shapes map[string][]int, loras []Applied, opts Options) (nn.LoRAs, Report, error) {
	targets, rep, err := plan(c, shapes, loras, opts)
	if err != nil {
		return nn.LoRAs{}, rep, err
	}
	src := &moduleSource{tensors: map[string]moduleTensor{}}
	out := nn.LoRAs{Source: src}
	fileIndex := map[*File]int{}
	for i, a := range loras {
		fileIndex[a.File] = i
	}
	for _, name := range rep.Targets {
		for _, d := range targets[name].deltas {
			prefix := fmt.Sprintf("lora%d:", fileIndex[d.file])
			down, up := prefix+d.mod.down, prefix+d.mod.up
			src.tensors[down] = moduleTensor{d.file, d.mod.down, d.mod.downShape}
			src.tensors[up] = moduleTensor{d.file, d.mod.up, d.mod.upShape}
			out.List = append(out.List, nn.LoRA{Target: name, Down: down, Up: up, Scale: d.factor})
		}
	}
	return out, rep, nil
}

// moduleSource serves LoRA module tensors by the names Unmerged gives them.
type moduleSource struct {
	tensors map[string]moduleTensor
}

type moduleTensor struct {
	file  *File
	key   string
	shape []int
}

// Tensor implements nn.Source.
func (s *moduleSource) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	t, ok := s.tensors[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("lora: no module tensor %q", name)
	}
	v, err := t.file.values(t.key)
	if err != nil {
		return "", nil, nil, err
	}
	return safetensors.F32, slices.Clone(t.shape), safetensors.Float32Tensor(name, t.shape, v).Data, nil
}

// Has implements nn.Source.
func (s *moduleSource) Has(name string) bool { _, ok := s.tensors[name]; return ok }

// resolver maps LoRA module paths to the model's weight names.
type resolver struct {
	shapes map[string][]int
	// flat maps kohya's spelling of a module path to the real paths that
	// spell that way. Flattening loses the difference between '.' and '_'
	// ("down_blocks.0" vs "down.blocks_0"), so, as A1111 does, names are
	// matched against the real ones rather than un-flattened by rule; two
	// real modules that flatten alike make a LoRA key ambiguous.
	flat map[string][]string
}

func newResolver(shapes map[string][]int) *resolver {
	r := &resolver{shapes: shapes, flat: map[string][]string{}}
	for name := range shapes {
		if path, ok := strings.CutSuffix(name, ".weight"); ok {
			fl := flatten(path)
			r.flat[fl] = append(r.flat[fl], path)
		}
	}
	for _, paths := range r.flat {
		sort.Strings(paths)
	}
	return r
}

// weight is the name of the weight m patches, "" when there is none.
func (r *resolver) weight(m *module) (string, error) {
	if !m.flat {
		name := m.path + ".weight"
		if _, ok := r.shapes[name]; ok {
			return name, nil
		}
		return "", nil
	}
	paths := r.flat[m.path]
	switch len(paths) {
	case 0:
		return "", nil
	case 1:
		return paths[0] + ".weight", nil
	}
	return "", fmt.Errorf("module %q is ambiguous: weights %s all flatten to it", m.path, strings.Join(paths, ", "))
}

// fit checks that up·down has the shape of weight w: [out, rank]·[rank, in]
// for a linear weight [out, in] or a 1×1 conv [out, in, 1, 1] (either LoRA
// spelling fits either weight: the product is the same numbers), and
// [out, rank, 1, 1]·[rank, in, kh, kw] for a kh×kw conv [out, in, kh, kw]
// (LoCon).
func fit(w []int, m *module) error {
	d, u := m.downShape, m.upShape
	if len(w) != 2 && len(w) != 4 {
		return fmt.Errorf("shape %v is neither a linear nor a conv weight", w)
	}
	if u[0] != w[0] {
		return fmt.Errorf("up %v gives %d outputs, the weight %v has %d", u, u[0], w, w[0])
	}
	if d[1] != w[1] {
		return fmt.Errorf("down %v takes %d inputs, the weight %v has %d", d, d[1], w, w[1])
	}
	wk, dk := [2]int{1, 1}, [2]int{1, 1}
	if len(w) == 4 {
		wk = [2]int{w[2], w[3]}
	}
	if len(d) == 4 {
		dk = [2]int{d[2], d[3]}
	}
	if wk != dk {
		return fmt.Errorf("down %v has a %d×%d kernel, the weight %v has %d×%d", d, dk[0], dk[1], w, wk[0], wk[1])
	}
	return nil
}

// Source serves merged weights. It implements nn.Source and is safe for
// concurrent use.
type Source struct {
	base    nn.Source
	targets map[string]*target // fixed after Merge
	names   []string
}

// target is one patched weight and its cached merged bytes.
type target struct {
	name   string
	shape  []int
	deltas []delta

	mu   sync.Mutex
	data []byte // F32, nil until computed or after Release
}

// delta is one LoRA module's contribution: factor · up·down.
type delta struct {
	file   *File
	mod    *module
	factor float64 // scale · alpha / rank
}

var _ nn.Source = (*Source)(nil)

// Tensor implements nn.Source. A patched weight is computed on its first
// read and kept until Release; the returned bytes are shared, as a mapped
// file's are, and must not be written to.
func (s *Source) Tensor(name string) (safetensors.DType, []int, []byte, error) {
	t := s.targets[name]
	if t == nil {
		return s.base.Tensor(name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.data == nil {
		data, err := s.compute(t)
		if err != nil {
			return "", nil, nil, err
		}
		t.data = data
	}
	return safetensors.F32, slices.Clone(t.shape), t.data, nil
}

// Has implements nn.Source.
func (s *Source) Has(name string) bool { return s.base.Has(name) }

// Targets lists the patched weights, sorted.
func (s *Source) Targets() []string { return slices.Clone(s.names) }

// Release drops a patched weight's cached bytes (a later read recomputes
// them). A compiler that streams weights to the bundle releases each one
// once written, so merged copies never accumulate.
func (s *Source) Release(name string) {
	if t := s.targets[name]; t != nil {
		t.mu.Lock()
		t.data = nil
		t.mu.Unlock()
	}
}

// compute merges t row by row: each output row of W (out, in·kh·kw values)
// is widened to float64, every delta adds Σ_r factor·up[o,r]·down[r,:] to
// it, and it is rounded to float32 once. Only one row of accumulators and
// the small LoRA matrices are held besides the input and output.
func (s *Source) compute(t *target) ([]byte, error) {
	dt, shape, raw, err := s.base.Tensor(t.name)
	if err != nil {
		return nil, fmt.Errorf("lora: merge %q: %w", t.name, err)
	}
	if !slices.Equal(shape, t.shape) {
		return nil, fmt.Errorf("lora: merge %q: base weight has shape %v, merge was checked against %v", t.name, shape, t.shape)
	}
	if !dt.IsFloat() {
		return nil, fmt.Errorf("lora: merge %q: base weight dtype %s is not floating-point", t.name, dt)
	}
	rows := shape[0]
	cols := 1
	for _, d := range shape[1:] {
		cols *= d
	}
	size := dt.Size()
	if len(raw) != rows*cols*size {
		return nil, fmt.Errorf("lora: merge %q: %d bytes for shape %v of %s", t.name, len(raw), shape, dt)
	}
	type lowRank struct {
		up     []float32 // [rows, rank]
		down   []float64 // [rank, cols]
		rank   int
		factor float64
	}
	lrs := make([]lowRank, 0, len(t.deltas))
	for _, d := range t.deltas {
		up, err := d.file.values(d.mod.up)
		if err != nil {
			return nil, fmt.Errorf("lora: merge %q: %w", t.name, err)
		}
		down32, err := d.file.values(d.mod.down)
		if err != nil {
			return nil, fmt.Errorf("lora: merge %q: %w", t.name, err)
		}
		r := d.mod.rank()
		if len(up) != rows*r || len(down32) != r*cols {
			// Merge checked the shapes; this only guards the indexing below.
			return nil, fmt.Errorf("lora: %s: key %q: %d up and %d down values do not fit %q %v", d.file.path, d.mod.key, len(up), len(down32), t.name, shape)
		}
		down := make([]float64, len(down32))
		for i, v := range down32 {
			down[i] = float64(v)
		}
		lrs = append(lrs, lowRank{up: up, down: down, rank: r, factor: d.factor})
	}
	out := make([]byte, 4*rows*cols)
	acc := make([]float64, cols)
	for o := range rows {
		w, err := safetensors.DecodeFloat32(raw[o*cols*size:(o+1)*cols*size], dt)
		if err != nil {
			return nil, fmt.Errorf("lora: merge %q: %w", t.name, err)
		}
		for j, v := range w {
			acc[j] = float64(v)
		}
		for _, lr := range lrs {
			for r := range lr.rank {
				c := lr.factor * float64(lr.up[o*lr.rank+r])
				if c == 0 {
					continue
				}
				for j, v := range lr.down[r*cols : (r+1)*cols] {
					acc[j] += c * v
				}
			}
		}
		row := out[4*o*cols:]
		for j, v := range acc {
			binary.LittleEndian.PutUint32(row[4*j:], math.Float32bits(float32(v)))
		}
	}
	return out, nil
}
