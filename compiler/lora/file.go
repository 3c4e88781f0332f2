// Package lora reads LoRA files and merges them into a model's weights.
//
// In the compiler's data flow it sits between the key map and the fp16 cast:
// checkpoint → key map (diffusers names) → LoRA merge → fp16 → trace →
// bundle. Load parses a file in the kohya/A1111 or diffusers/PEFT naming
// (conventions.go holds every convention in one table); Merge resolves its
// modules against the real weight names of one component (UNet or text
// encoder), checks every shape up front, and returns an nn.Source that
// computes W + scale · alpha/rank · up·down for the patched weights only, on
// demand, while every other weight passes through untouched. The compiler
// therefore never holds two full copies of a model.
package lora

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Options tune how forgiving loading and merging are.
type Options struct {
	// Lenient turns keys no convention recognizes (Load) and modules that
	// name no weight of the model (Merge) into warnings, as the compiler's
	// --lora-lenient asks. Refused networks, wrong shapes and LoRAs for
	// another model stay errors.
	Lenient bool
}

// File is a parsed LoRA file. It keeps the file mapped: the down/up
// tensors are read when a merged weight is computed, so the File must stay
// open until every merged Source built from it has been read.
type File struct {
	path     string
	st       *safetensors.File
	modules  []*module // sorted by key
	warnings []string
}

// module is one low-rank update: W += factor · up·down.
type module struct {
	component Component
	key       string // the down tensor's key, naming the module in errors
	path      string // module path in the component; flattened when flat
	flat      bool
	format    Format
	down, up  string // tensor keys
	downShape []int
	upShape   []int
	alpha     float64 // rank when the file stores none
	alphaKey  string
	hasAlpha  bool
}

func (m *module) rank() int { return m.downShape[0] }

// Module describes one LoRA module of a file.
type Module struct {
	// Key is the module's down tensor key as the file writes it.
	Key string
	// Path is the module path in the component's diffusers naming, with
	// '.' flattened to '_' for kohya files (Merge resolves it).
	Path   string
	Format Format
	Rank   int
	// Alpha is the stored alpha, or Rank when the file has none (PEFT
	// folds alpha/rank into lora_B).
	Alpha    float64
	Down, Up []int
}

// Load opens and parses a LoRA file.
func Load(path string, opts Options) (*File, error) {
	st, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	f, err := parse(path, st, opts)
	if err != nil {
		st.Close()
		return nil, err
	}
	return f, nil
}

// Parse parses an in-memory LoRA file; name is used in errors. The File
// aliases data.
func Parse(name string, data []byte, opts Options) (*File, error) {
	st, err := safetensors.Parse(name, data)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	return parse(name, st, opts)
}

// groupKey identifies a module within a file.
type groupKey struct {
	component Component
	path      string
}

func parse(path string, st *safetensors.File, opts Options) (*File, error) {
	f := &File{path: path, st: st}
	groups := map[groupKey]*module{}
	// Names are sorted, so the first error is the same on every run.
	for _, key := range st.Names() {
		ki, ok := classify(key)
		if !ok {
			if !opts.Lenient {
				return nil, f.errorf(key, "not a LoRA tensor of any supported naming (kohya lora_unet_/lora_te_, diffusers/PEFT unet./text_encoder.)")
			}
			f.warnings = append(f.warnings, fmt.Sprintf("%s: key %q: not a LoRA tensor, ignored", path, key))
			continue
		}
		if ki.refuse != "" {
			return nil, f.errorf(key, "%s", ki.refuse)
		}
		gk := groupKey{ki.component, ki.path}
		m := groups[gk]
		if m == nil {
			m = &module{component: ki.component, path: ki.path, flat: ki.flat}
			groups[gk] = m
		}
		if ki.format != "" {
			if m.format != "" && m.format != ki.format {
				return nil, f.errorf(key, "mixes %s and %s naming within one module", m.format, ki.format)
			}
			m.format = ki.format
		}
		if err := f.setTensor(m, key, ki.role); err != nil {
			return nil, err
		}
	}
	for _, m := range groups {
		if err := f.check(m); err != nil {
			return nil, err
		}
		f.modules = append(f.modules, m)
	}
	sort.Slice(f.modules, func(i, j int) bool { return f.modules[i].key < f.modules[j].key })
	return f, nil
}

// setTensor records key as m's tensor of role r, checking its dtype and rank
// of shape; how the shapes fit each other is check's job.
func (f *File) setTensor(m *module, key string, r role) error {
	info, _ := f.st.Info(key)
	if !info.DType.IsFloat() {
		return f.errorf(key, "dtype %s is not a floating-point type", info.DType)
	}
	var slot *string
	switch r {
	case roleDown:
		slot = &m.down
	case roleUp:
		slot = &m.up
	case roleAlpha:
		if m.hasAlpha {
			return f.errorf(key, "a second alpha for the same module")
		}
		if info.NumElements() != 1 {
			return f.errorf(key, "alpha has shape %v, want one element", info.Shape)
		}
		v, _, err := f.st.Float32s(key)
		if err != nil {
			return fmt.Errorf("lora: %w", err)
		}
		a := float64(v[0])
		if math.IsNaN(a) || math.IsInf(a, 0) {
			return f.errorf(key, "alpha is %v", a)
		}
		m.alpha, m.alphaKey, m.hasAlpha = a, key, true
		return nil
	}
	if *slot != "" {
		return f.errorf(key, "%q is already the %s tensor of this module", *slot, r)
	}
	*slot = key
	if r == roleDown {
		m.key, m.downShape = key, info.Shape
	} else {
		m.upShape = info.Shape
	}
	return nil
}

// check validates a complete module: both halves present, ranks that agree,
// and shapes a linear or conv update can have.
func (f *File) check(m *module) error {
	switch {
	case m.down == "" && m.up == "":
		return f.errorf(m.alphaKey, "alpha without down/up tensors")
	case m.down == "":
		return f.errorf(m.up, "no down (lora_down / lora_A) tensor for this up tensor")
	case m.up == "":
		return f.errorf(m.down, "no up (lora_up / lora_B) tensor for this down tensor")
	}
	d, u := m.downShape, m.upShape
	if len(d) != 2 && len(d) != 4 {
		return f.errorf(m.down, "down tensor has shape %v, want [rank, in] or [rank, in, kh, kw]", d)
	}
	if len(u) != 2 && (len(u) != 4 || u[2] != 1 || u[3] != 1) {
		return f.errorf(m.up, "up tensor has shape %v, want [out, rank] or [out, rank, 1, 1]", u)
	}
	if slices.Contains(d, 0) || slices.Contains(u, 0) {
		return f.errorf(m.down, "empty LoRA: down %v, up %v", d, u)
	}
	if d[0] != u[1] {
		return f.errorf(m.down, "rank mismatch: down %v has rank %d, up %q %v has rank %d", d, d[0], m.up, u, u[1])
	}
	if !m.hasAlpha {
		m.alpha = float64(m.rank())
	}
	return nil
}

func (f *File) errorf(key, format string, args ...any) error {
	return fmt.Errorf("lora: %s: key %q: %s", f.path, key, fmt.Sprintf(format, args...))
}

// Path is the file's path as given to Load or Parse.
func (f *File) Path() string { return f.path }

// Close unmaps the file. Merged Sources built from it fail afterwards.
func (f *File) Close() error { return f.st.Close() }

// Warnings lists what Load ignored in lenient mode.
func (f *File) Warnings() []string { return slices.Clone(f.warnings) }

// Format is the naming the file uses: Kohya, PEFT, Diffusers, Mixed, or ""
// for a file with no modules.
func (f *File) Format() Format {
	var got Format
	for _, m := range f.modules {
		switch {
		case got == "":
			got = m.format
		case m.format != "" && m.format != got:
			return Mixed
		}
	}
	return got
}

// For lists the file's modules for one component, sorted by key.
func (f *File) For(c Component) []Module {
	var out []Module
	for _, m := range f.modules {
		if m.component != c {
			continue
		}
		out = append(out, Module{
			Key:    m.key,
			Path:   m.path,
			Format: m.format,
			Rank:   m.rank(),
			Alpha:  m.alpha,
			Down:   slices.Clone(m.downShape),
			Up:     slices.Clone(m.upShape),
		})
	}
	return out
}

// Metadata is the file's __metadata__ (kohya writes ss_network_dim,
// ss_network_alpha, ss_base_model_version... there).
func (f *File) Metadata() map[string]string { return f.st.Metadata() }

// values decodes a LoRA tensor to float32; the error is the safetensors
// reader's, which names the file and key.
func (f *File) values(key string) ([]float32, error) {
	v, _, err := f.st.Float32s(key)
	return v, err
}

// joinShort names the first few of many keys in one error line.
func joinShort(keys []string, n int) string {
	if len(keys) <= n {
		return strings.Join(keys, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(keys[:n], ", "), len(keys)-n)
}
