package nn

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/gobackend"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// GoBackendConfig is the Go backend configuration we ship. The default
// executor runs independent ops in parallel and was seen to hang forever with
// four or more large matmuls ready at once (and a panic in it kills the
// process); sequential op scheduling avoids both, and matmul and convolution
// are still parallel inside each op. TestUNetShippedBackend runs the full
// tiny UNet under this configuration.
//
// Ops run in the order the model code created them (creation_order), as an
// eager framework would: the default schedule runs ops level by level
// (longest path to an output first), which keeps the outputs of every
// branch at one depth alive together and undoes blocked im2col; the SD1.5
// VAE decoder at 512×512 then held 2.8 GiB of temporaries instead of 1 GiB.
// peakTemporaries estimates the memory under this order.
const GoBackendConfig = "ops_sequential,creation_order"

// NewBackend creates a backend from a spec: "go" (or "") for the pure-Go
// backend in the shipped configuration, or any spec GoMLX's registry knows
// (e.g. "xla:cuda") when that backend is linked in.
func NewBackend(spec string) (compute.Backend, error) {
	if spec == "" || spec == "go" {
		b, err := gobackend.New(GoBackendConfig)
		if err != nil {
			return nil, fmt.Errorf("go backend: %w", err)
		}
		return b, nil
	}
	if strings.HasPrefix(spec, "go:") {
		b, err := gobackend.New(strings.TrimPrefix(spec, "go:"))
		if err != nil {
			return nil, fmt.Errorf("go backend %q: %w", spec, err)
		}
		return b, nil
	}
	b, err := compute.NewWithConfig(spec)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", spec, err)
	}
	return b, nil
}

// Lowering picks how ops with several equivalent formulations are built.
type Lowering int

const (
	// LowerGo is for the pure-Go backend: 3×3 convolutions as im2col + matmul.
	LowerGo Lowering = iota
	// LowerXLA is for XLA: plain convolution ops, which XLA fuses itself.
	LowerXLA
)

// LoweringFor chooses the lowering for a backend.
func LoweringFor(b compute.Backend) Lowering {
	// Name() is a display name ("Go Backend"); String() is the registry name.
	if b.String() == gobackend.BackendName {
		return LowerGo
	}
	return LowerXLA
}

// Precision says in which dtype stored weights reach the device.
type Precision int

const (
	// Widen converts weights to float32 on the host at load: twice the
	// memory of fp16, but the Go backend's f32 matmul is ~40× faster than
	// its f16 one.
	Widen Precision = iota
	// KeepStored uploads weights as stored (fp16 in a bundle) and converts
	// them to float32 inside the graph: half the memory.
	KeepStored
)

// Weights are a model's weights on one backend. Each (name, layout) is
// arranged and uploaded once and shared by every program compiled from it, so
// several shape buckets do not multiply weight memory.
type Weights struct {
	backend   compute.Backend
	src       Source
	precision Precision
	lowering  Lowering

	// lora holds unmerged LoRAs (WithLoRAs), nil without; loraOf is set
	// on a LoRA set's own Weights, to the model's.
	lora   *loraSet
	loraOf *Weights

	mu     sync.Mutex
	loaded map[weightKey]*tensors.Tensor
	used   map[string]bool
	// scratch holds a rearranged weight until it is copied to the device.
	scratch []byte
}

type weightKey struct {
	name   string
	layout Layout
}

// NewWeights binds a source to a backend.
func NewWeights(backend compute.Backend, src Source, precision Precision) *Weights {
	return &Weights{
		backend:   backend,
		src:       src,
		precision: precision,
		lowering:  LoweringFor(backend),
		loaded:    map[weightKey]*tensors.Tensor{},
		used:      map[string]bool{},
	}
}

// WithLowering overrides the lowering chosen for the backend; tests use it
// to check every lowering computes the same function on one backend.
func (w *Weights) WithLowering(l Lowering) *Weights {
	w.lowering = l
	return w
}

// DropScratch frees the buffer weights are rearranged in (as large as the
// largest rearranged weight: ~90 MB for SD1.5). Call it once the programs
// are compiled; a later load grows a new one.
func (w *Weights) DropScratch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scratch = nil
	if w.lora != nil {
		w.lora.w.DropScratch()
	}
}

// Backend is the backend the weights live on.
func (w *Weights) Backend() compute.Backend { return w.backend }

// Used lists the stored names that some compiled program consumed; a
// checkpoint tensor outside it was ignored by the model.
func (w *Weights) Used() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]bool, len(w.used))
	for k := range w.used {
		out[k] = true
	}
	return out
}

// Bytes is the host memory held by loaded weights.
func (w *Weights) Bytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, t := range w.loaded {
		n += int64(t.Shape().Memory())
	}
	return n
}

func goDType(d safetensors.DType) (dtypes.DType, error) {
	switch d {
	case safetensors.F32:
		return dtypes.Float32, nil
	case safetensors.F16:
		return dtypes.Float16, nil
	case safetensors.BF16:
		return dtypes.BFloat16, nil
	case safetensors.F64:
		return dtypes.Float64, nil
	}
	return dtypes.InvalidDType, fmt.Errorf("dtype %s is not a weight dtype", d)
}

// isTraceOnly reports a backend that records programs instead of running
// them (kernels/hlo).
func isTraceOnly(b compute.Backend) bool {
	t, ok := b.(interface{ TraceOnly() bool })
	return ok && t.TraceOnly()
}

// bind returns the shape a weight has on the device and, unless the
// backend only traces, its tensor there.
func (w *Weights) bind(name string, layout Layout) (shapes.Shape, *tensors.Tensor, error) {
	if !isTraceOnly(w.backend) {
		t, err := w.tensor(name, layout)
		if err != nil {
			return shapes.Invalid(), nil, err
		}
		return t.Shape(), t, nil
	}
	// The source's bytes are not touched: a mapped file stays unread.
	dt, stored, _, err := w.src.Tensor(name)
	if err != nil {
		return shapes.Invalid(), nil, err
	}
	gdt, err := goDType(dt)
	if err != nil {
		return shapes.Invalid(), nil, err
	}
	if w.precision == Widen {
		gdt = dtypes.Float32
	}
	dims, err := arrangedShape(layout, stored)
	if err != nil {
		return shapes.Invalid(), nil, err
	}
	w.mu.Lock()
	w.used[name] = true
	w.mu.Unlock()
	return shapes.Make(gdt, dims...), nil, nil
}

// tensor returns the arranged host tensor for a weight, loading it once.
func (w *Weights) tensor(name string, layout Layout) (*tensors.Tensor, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := weightKey{name, layout}
	if t, ok := w.loaded[key]; ok {
		return t, nil
	}
	dt, shape, data, err := w.src.Tensor(name)
	if err != nil {
		return nil, err
	}
	gdt, err := goDType(dt)
	if err != nil {
		return nil, err
	}
	shape, data, err = arrange(layout, dt.Size(), shape, data, &w.scratch)
	if err != nil {
		return nil, err
	}
	// Build each tensor directly in a device (shared) buffer: a host copy
	// next to the device one would double the model's memory, and garbage
	// copies make the Go heap grow to twice the model before it collects.
	var t *tensors.Tensor
	if w.precision == Widen && gdt != dtypes.Float32 {
		if t, err = tensors.FromShapeForBackend(w.backend, 0, shapes.Make(dtypes.Float32, shape...)); err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		var derr error
		if err := tensors.MutableFlatData(t, func(flat []float32) { derr = safetensors.DecodeFloat32Into(flat, data, dt) }); err != nil {
			return nil, err
		}
		if derr != nil {
			return nil, derr
		}
	} else if t, err = tensors.FromRaw(w.backend, 0, shapes.Make(gdt, shape...), data); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	// A backend without shared buffers got host tensors: move them now and
	// drop the host copy.
	if err := t.ToDevice(w.backend, 0); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	// The stored bytes are on the device now; a memory-mapped source can
	// drop its pages so they do not count twice in the process's memory.
	if r, ok := w.src.(interface{ Release(name string) }); ok {
		r.Release(name)
	}
	w.loaded[key] = t
	w.used[name] = true
	return t, nil
}

// Scope names weights the way diffusers does ("down_blocks.0.resnets.1"),
// so model code reads its checkpoint keys directly.
type Scope struct {
	b      *binder
	w      *Weights
	prefix string
}

// In returns a sub-scope: s.In("resnets", 1) names "…resnets.1.".
func (s Scope) In(parts ...any) Scope {
	p := s.prefix
	for _, part := range parts {
		p += fmt.Sprint(part) + "."
	}
	return Scope{b: s.b, w: s.w, prefix: p}
}

// Name is the full name of a weight in this scope.
func (s Scope) Name(name string) string { return s.prefix + name }

// Has reports whether the checkpoint holds a weight in this scope.
func (s Scope) Has(name string) bool { return s.w.src.Has(s.prefix + name) }

// StoredShape is a weight's shape as the checkpoint stores it. A missing
// weight aborts the trace with an error naming it.
func (s Scope) StoredShape(name string) []int {
	_, shape, _, err := s.w.src.Tensor(s.prefix + name)
	if err != nil {
		panic(fmt.Errorf("weight %q: %w", s.prefix+name, err))
	}
	return shape
}

// KeepsHalf reports whether a weight reaches the device in half precision
// (stored fp16 or bf16, loaded KeepStored): the model is running in fp16,
// and its full-resolution activations may be kept in fp16 too.
func (s Scope) KeepsHalf(name string) bool {
	if s.w.precision != KeepStored {
		return false
	}
	dt, _, _, err := s.w.src.Tensor(s.prefix + name)
	return err == nil && (dt == safetensors.F16 || dt == safetensors.BF16)
}

// Lowering is the lowering of the backend being traced for.
func (s Scope) Lowering() Lowering { return s.w.lowering }

// Graph is the graph being built.
func (s Scope) Graph() *graph.Graph { return s.b.g }

// Weight binds a stored weight as a float32 graph node. A missing weight
// aborts the trace with an error naming it.
func (s Scope) Weight(name string, layout Layout) *graph.Node {
	full := s.prefix + name
	key := boundKey{s.w, weightKey{full, layout}}
	if n, ok := s.b.nodes[key]; ok {
		return n
	}
	sh, t, err := s.w.bind(full, layout)
	if err != nil {
		panic(fmt.Errorf("weight %q: %w", full, err))
	}
	p := graph.Parameter(s.b.g, fmt.Sprintf("w%d:%s@%s", len(s.b.params), full, layout), sh)
	n := p
	if sh.DType != dtypes.Float32 {
		n = graph.ConvertDType(p, dtypes.Float32)
	}
	s.b.nodes[key] = n
	s.b.params = append(s.b.params, t)
	owner, lora := s.w, false
	if s.w.loraOf != nil {
		owner, lora = s.w.loraOf, true
	}
	s.b.bindings = append(s.b.bindings, Binding{Model: s.b.models[owner], Name: full, Layout: layout, LoRA: lora})
	return n
}

// StoredWeight binds a weight in the dtype it reaches the device in (fp16
// kept as stored under KeepStored), for ops that select from it before any
// arithmetic: gathering embedding rows first and widening only those
// avoids widening a whole table. Convert the result with ConvertDType.
func (s Scope) StoredWeight(name string, layout Layout) *graph.Node {
	n := s.Weight(name, layout)
	if n.Type() == graph.NodeTypeConvertDType {
		return n.Inputs()[0]
	}
	return n
}

type binder struct {
	g     *graph.Graph
	nodes map[boundKey]*graph.Node
	// params are the bound weights in parameter order, nil on a
	// trace-only backend; bindings name them.
	params   []*tensors.Tensor
	bindings []Binding
	// models indexes the program's Weights, for Binding.Model.
	models map[*Weights]int
}

// Binding names the weight behind one weight parameter of a program: the
// stored (diffusers) name and the layout it was arranged in, and whose it
// is: a program spanning models (the ControlNet + UNet step) binds the
// same names from several.
type Binding struct {
	// Model indexes the Weights given to CompileMulti (0 for Compile).
	Model  int
	Name   string
	Layout Layout
	// LoRA marks an unmerged LoRA tensor (Weights.WithLoRAs) of that
	// model; Name is then the LoRA source's name.
	LoRA bool
}

type boundKey struct {
	w *Weights
	weightKey
}

// Program is one compiled graph (a model at one shape bucket) with its
// weights bound. Run it as often as needed; it is safe for one caller at a
// time.
type Program struct {
	name string
	// exe is the compiled program alone. The traced graph is dropped once
	// compiled: its nodes were half the heap's objects with every bucket
	// of SD1.5 compiled (910k → 457k), and every collection marked them.
	exe      compute.Executable
	inputs   []shapes.Shape
	weights  []*tensors.Tensor
	bindings []Binding
	backend  compute.Backend
	// temporaries is peakTemporaries of the program.
	temporaries int64
}

// BuildFunc traces a model: inputs are the program's parameters in order.
type BuildFunc func(s Scope, inputs []*graph.Node) []*graph.Node

// Compile traces build for the given input shapes and compiles it.
// Weights are taken from w by name; errors in tracing (a missing weight, a
// shape that does not fit) come back as errors, not panics.
func Compile(name string, w *Weights, inputs []shapes.Shape, build BuildFunc) (*Program, error) {
	return CompileMulti(name, []*Weights{w}, inputs, func(s []Scope, in []*graph.Node) []*graph.Node {
		return build(s[0], in)
	})
}

// CompileMulti is Compile for a graph that spans several models (the
// ControlNet and the UNet of one denoising step): build gets one root scope
// per Weights. All must live on the same backend.
func CompileMulti(name string, ws []*Weights, inputs []shapes.Shape, build func(s []Scope, inputs []*graph.Node) []*graph.Node) (p *Program, err error) {
	if len(ws) == 0 {
		return nil, fmt.Errorf("compile %s: no weights", name)
	}
	backend := ws[0].backend
	for _, w := range ws[1:] {
		if w.backend != backend {
			return nil, fmt.Errorf("compile %s: weights on different backends", name)
		}
	}
	g := graph.NewGraph(backend, name)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("trace %s: %w", name, panicError(r))
			g.Finalize()
			p = nil
		}
	}()
	b := &binder{g: g, nodes: map[boundKey]*graph.Node{}, models: map[*Weights]int{}}
	for i, w := range ws {
		if _, dup := b.models[w]; !dup {
			b.models[w] = i
		}
	}
	nodes := make([]*graph.Node, len(inputs))
	for i, sh := range inputs {
		nodes[i] = graph.Parameter(g, fmt.Sprintf("input%d", i), sh)
	}
	scopes := make([]Scope, len(ws))
	for i, w := range ws {
		scopes[i] = Scope{b: b, w: w}
	}
	outs := build(scopes, nodes)
	temp := peakTemporaries(g.Nodes(), outs)
	if err := g.Compile(outs...); err != nil {
		panic(err)
	}
	return &Program{name: name, exe: g.Executable(), inputs: inputs, weights: b.params, bindings: b.bindings, backend: backend,
		temporaries: temp}, nil
}

// ErrTraced is returned by Run on a program built on a trace-only backend.
var ErrTraced = errors.New("program was traced for export only; compile it on a real backend to run it")

// StableHLO is the program's StableHLO text when its backend exports one
// (kernels/hlo); ok is false on backends that only run programs.
func (p *Program) StableHLO() (text []byte, ok bool) {
	e, ok := p.exe.(interface{ StableHLO() []byte })
	if !ok {
		return nil, false
	}
	return e.StableHLO(), true
}

// Name is the program's name.
func (p *Program) Name() string { return p.name }

// Bindings lists the weight parameters, which follow the inputs, in
// order: what another runtime running the program's StableHLO must pass.
func (p *Program) Bindings() []Binding { return slices.Clone(p.bindings) }

// TemporaryBytes estimates the most memory the program's intermediate
// values hold at once on the Go backend (ops one at a time in creation
// order), weights and inputs not counted.
func (p *Program) TemporaryBytes() int64 { return p.temporaries }

// NumWeights is the count of weight tensors bound as parameters.
func (p *Program) NumWeights() int { return len(p.weights) }

// Run executes the program. Inputs must have the shapes it was compiled for.
func (p *Program) Run(inputs ...*tensors.Tensor) (out []*tensors.Tensor, err error) {
	if isTraceOnly(p.backend) {
		// Traced programs have a text, not weights.
		return nil, fmt.Errorf("%s: %w", p.name, ErrTraced)
	}
	if len(inputs) != len(p.inputs) {
		return nil, fmt.Errorf("%s: %d inputs given, want %d", p.name, len(inputs), len(p.inputs))
	}
	for i, t := range inputs {
		if !t.Shape().Equal(p.inputs[i]) {
			return nil, fmt.Errorf("%s: input %d has shape %s, compiled for %s", p.name, i, t.Shape(), p.inputs[i])
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("run %s: %w", p.name, panicError(r))
			out = nil
		}
	}()
	all := make([]compute.Buffer, 0, len(inputs)+len(p.weights))
	for _, t := range append(append([]*tensors.Tensor(nil), inputs...), p.weights...) {
		buf, err := t.Buffer(p.backend, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: upload: %w", p.name, err)
		}
		all = append(all, buf)
	}
	results, err := p.exe.Execute(all, make([]bool, len(all)), 0)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.name, err)
	}
	out = make([]*tensors.Tensor, len(results))
	for i, buf := range results {
		if out[i], err = tensors.FromBuffer(buf); err != nil {
			for _, b := range results {
				_ = b.Finalize() // the backend's, not a caller's: nothing holds them yet
			}
			return nil, fmt.Errorf("run %s: output %d: %w", p.name, i, err)
		}
	}
	return out, nil
}

// Close releases the compiled program.
func (p *Program) Close() { p.exe.Finalize() }

func panicError(r any) error {
	if e, ok := r.(error); ok {
		return e
	}
	return errors.New(fmt.Sprint(r))
}
