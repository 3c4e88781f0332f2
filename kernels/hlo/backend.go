// Package hlo is a trace-only compute backend: graphs built on it are
// written out as StableHLO text (through go-xla's stablehlo builder, which
// needs no PJRT plugin) instead of being run. The compiler traces every
// program of the pipeline on it for each shape bucket and stores the text in
// the bundle's programs/ folder; the hash of that text names the program in
// the manifest and keys the function's executable cache.
//
// It implements the ops the kernels use (the XLA lowering of kernels/nn);
// any other op fails the trace with compute.ErrNotImplemented naming it, and
// GoMLX then falls back to the decomposed form of fused ops. Weights bound
// by kernels/nn on this backend are never read: only their shapes enter the
// program, as parameters.
package hlo

import (
	"errors"
	"fmt"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/notimplemented"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/go-xla/stablehlo"
)

// BackendName is what String reports; kernels/nn lowers for XLA on any
// backend but the Go one.
const BackendName = "stablehlo"

// ErrTraceOnly is returned by everything that would need data on the device.
var ErrTraceOnly = errors.New("the stablehlo export backend only traces programs; it cannot hold or compute data")

// Backend builds StableHLO programs. It holds no state, so one value can
// serve any number of traces.
type Backend struct {
	notimplemented.Backend
}

// New returns a trace-only StableHLO backend.
func New() *Backend { return &Backend{} }

var _ compute.Backend = (*Backend)(nil)

// Name implements compute.Backend.
func (b *Backend) Name() string { return "StableHLO export" }

// String implements compute.Backend.
func (b *Backend) String() string { return BackendName }

// Description implements compute.Backend.
func (b *Backend) Description() string {
	return "trace-only backend writing StableHLO text (go-xla stablehlo builder, no PJRT plugin)"
}

// DeviceDescription implements compute.Backend.
func (b *Backend) DeviceDescription(compute.DeviceNum) string { return "none (trace only)" }

// TraceOnly tells kernels/nn not to upload weights: the programs only need
// their shapes.
func (b *Backend) TraceOnly() bool { return true }

// Capabilities lists the ops Function implements, so that GoMLX picks the
// decompositions it can export.
func (b *Backend) Capabilities() compute.Capabilities {
	c := compute.Capabilities{Operations: map[compute.OpType]bool{}, DTypes: map[dtypes.DType]bool{}}
	for _, op := range supportedOps {
		c.Operations[op] = true
	}
	for _, dt := range []dtypes.DType{dtypes.Bool, dtypes.Int32, dtypes.Int64, dtypes.Float16, dtypes.BFloat16, dtypes.Float32, dtypes.Float64} {
		c.DTypes[dt] = true
	}
	return c
}

// BufferFromFlatData implements compute.DataInterface: there is no device.
func (b *Backend) BufferFromFlatData(compute.DeviceNum, any, shapes.Shape) (compute.Buffer, error) {
	return nil, ErrTraceOnly
}

// NewSharedBuffer implements compute.DataInterface: there is no device.
func (b *Backend) NewSharedBuffer(compute.DeviceNum, shapes.Shape) (compute.Buffer, any, error) {
	return nil, nil, ErrTraceOnly
}

// Builder implements compute.Backend.
func (b *Backend) Builder(name string) compute.Builder {
	bld := &Builder{Builder: notimplemented.Builder{ErrFn: notImplemented}, name: name, hlo: stablehlo.New(name)}
	bld.main = &Function{Function: notimplemented.Function{ErrFn: notImplemented}, builder: bld, name: compute.MainName, fn: bld.hlo.Main()}
	return bld
}

// notImplemented names the op a trace needs that this backend lacks; for a
// fused op GoMLX then uses its decomposition.
func notImplemented(op compute.OpType) error {
	return fmt.Errorf("stablehlo export: op %s: %w", op, compute.ErrNotImplemented)
}

// Builder is one program being traced.
type Builder struct {
	notimplemented.Builder
	name     string
	hlo      *stablehlo.Builder
	main     *Function
	compiled bool
}

// Name implements compute.Builder.
func (b *Builder) Name() string { return b.name }

// Main implements compute.Builder.
func (b *Builder) Main() compute.Function { return b.main }

// NewFunction implements compute.Builder: the kernels trace single-function
// programs.
func (b *Builder) NewFunction(name string) (compute.Function, error) {
	return nil, fmt.Errorf("function %q: %w", name, compute.ErrNotImplemented)
}

// OpShape implements compute.Builder.
func (b *Builder) OpShape(op compute.Value) (shapes.Shape, error) { return b.main.Shape(op) }

// Compile implements compute.Builder: it writes the program's text.
func (b *Builder) Compile() (compute.Executable, error) {
	if b.compiled {
		return nil, fmt.Errorf("program %q compiled twice", b.name)
	}
	if !b.main.returned {
		return nil, fmt.Errorf("program %q: main function has no return", b.name)
	}
	text, err := b.hlo.Build()
	if err != nil {
		return nil, fmt.Errorf("program %q: build StableHLO: %w", b.name, err)
	}
	b.compiled = true
	return &Program{text: text, inputNames: b.main.paramNames, inputs: b.main.params, outputs: b.main.outputs}, nil
}

// Program is a traced program: its StableHLO text and signature. It cannot
// run.
type Program struct {
	text       []byte
	inputNames []string
	inputs     []shapes.Shape
	outputs    []shapes.Shape
}

var _ compute.Executable = (*Program)(nil)

// StableHLO is the program as StableHLO text (an MLIR module whose main
// function takes the parameters in trace order).
func (p *Program) StableHLO() []byte { return p.text }

// Finalize implements compute.Executable.
func (p *Program) Finalize() {}

// Inputs implements compute.Executable.
func (p *Program) Inputs() ([]string, []shapes.Shape) {
	return slices.Clone(p.inputNames), slices.Clone(p.inputs)
}

// Outputs implements compute.Executable.
func (p *Program) Outputs() []shapes.Shape { return slices.Clone(p.outputs) }

// Execute implements compute.Executable: a traced program cannot run.
func (p *Program) Execute([]compute.Buffer, []bool, compute.DeviceNum) ([]compute.Buffer, error) {
	return nil, ErrTraceOnly
}
