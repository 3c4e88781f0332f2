// Package interp is a small reference interpreter for the StableHLO subset
// that kernels/hlo exports. It is test-only: nothing in the product runs
// it. Its job is to prove that an exported program computes what the Go
// backend and diffusers compute, on a machine with no XLA or PJRT plugin:
// the golden tests trace the tiny model's programs on kernels/hlo, run
// their text here with the checkpoint's weights, and compare with the
// golden diffusers references.
//
// It is written from the StableHLO spec (https://openxla.org/stablehlo/spec),
// one evaluator per op, for clarity rather than speed. An op, attribute,
// dtype or attribute value it does not know is an error naming it at Parse,
// never a silently wrong result. Every op's result is checked against the
// type the text declares for it, so an exporter that mislabels a shape is
// caught too.
//
// Numerics: float tensors (f32, f16, bf16) are held as float32; results
// of f16/bf16 ops are rounded to their type. Sums (dot_general,
// convolution, reduce with an add body) accumulate in float64 and round
// once: the spec leaves the order and precision of accumulation to the
// implementation, and the most exact one is the fairest reference.
// Transcendentals are computed in float64 and rounded to float32.
package interp

import (
	"fmt"
	"slices"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// DType is a tensor element type, named as in StableHLO text.
type DType int

// The element types this interpreter supports.
const (
	InvalidDType DType = iota
	F32
	F16
	BF16
	I32
	I64
	I1 // bool
)

var dtypeNames = map[DType]string{F32: "f32", F16: "f16", BF16: "bf16", I32: "i32", I64: "i64", I1: "i1"}

func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// IsFloat reports a float type (held in Tensor.F32).
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 }

// IsInt reports an integer type (held in Tensor.Ints).
func (d DType) IsInt() bool { return d == I32 || d == I64 }

func parseDType(s string) (DType, bool) {
	for d, n := range dtypeNames {
		if n == s {
			return d, true
		}
	}
	return InvalidDType, false
}

// Tensor is a dense row-major array. Exactly one data slice is used,
// chosen by DType: F32 for floats, Ints for integers, Bools for i1.
// Evaluators never modify a tensor they are given, so tensors may share
// data (a reshape does).
type Tensor struct {
	DType DType
	Dims  []int
	F32   []float32
	Ints  []int64
	Bools []bool
}

// NewF32 makes a float tensor of dtype dt (F32, F16 or BF16) over data.
func NewF32(dt DType, data []float32, dims ...int) Tensor {
	return Tensor{DType: dt, Dims: slices.Clone(dims), F32: data}
}

// NewInts makes an integer tensor (I32 or I64) over data.
func NewInts(dt DType, data []int64, dims ...int) Tensor {
	return Tensor{DType: dt, Dims: slices.Clone(dims), Ints: data}
}

// NewBools makes an i1 tensor over data.
func NewBools(data []bool, dims ...int) Tensor {
	return Tensor{DType: I1, Dims: slices.Clone(dims), Bools: data}
}

// Size is the number of elements.
func (t *Tensor) Size() int { return numElements(t.Dims) }

func numElements(dims []int) int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

// dataLen is the length of the data slice the dtype selects.
func (t *Tensor) dataLen() int {
	switch {
	case t.DType.IsFloat():
		return len(t.F32)
	case t.DType.IsInt():
		return len(t.Ints)
	case t.DType == I1:
		return len(t.Bools)
	}
	return -1
}

// check validates that the data fits the dims and dtype.
func (t *Tensor) check() error {
	if _, ok := dtypeNames[t.DType]; !ok {
		return fmt.Errorf("unsupported dtype %s", t.DType)
	}
	if n := t.dataLen(); n != t.Size() {
		return fmt.Errorf("%s tensor %v holds %d values, want %d", t.DType, t.Dims, n, t.Size())
	}
	if t.DType == I32 {
		for _, v := range t.Ints {
			if v != int64(int32(v)) {
				return fmt.Errorf("value %d is out of the i32 range", v)
			}
		}
	}
	return nil
}

// typ is the tensor's type, for comparing with a declared one.
func (t *Tensor) typ() tensorType { return tensorType{dtype: t.DType, dims: t.Dims} }

// newTensor allocates a zero tensor.
func newTensor(dt DType, dims []int) *Tensor {
	t := &Tensor{DType: dt, Dims: slices.Clone(dims)}
	n := numElements(dims)
	switch {
	case dt.IsFloat():
		t.F32 = make([]float32, n)
	case dt.IsInt():
		t.Ints = make([]int64, n)
	default:
		t.Bools = make([]bool, n)
	}
	return t
}

// roundToType makes every value representable in the tensor's dtype, as
// an op of that dtype would produce it: f16/bf16 round to nearest even,
// i32 wraps around. It works in place on a tensor the caller just made.
func (t *Tensor) roundToType() {
	switch t.DType {
	case F16:
		for i, v := range t.F32 {
			t.F32[i] = safetensors.HalfToFloat32(safetensors.Float32ToHalf(v))
		}
	case BF16:
		for i, v := range t.F32 {
			t.F32[i] = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v))
		}
	case I32:
		for i, v := range t.Ints {
			t.Ints[i] = int64(int32(v))
		}
	}
}

// tensorType is a ranked tensor type: tensor<2x3xf32>.
type tensorType struct {
	dtype DType
	dims  []int
}

func (t tensorType) String() string {
	s := "tensor<"
	for _, d := range t.dims {
		s += fmt.Sprintf("%dx", d)
	}
	return s + t.dtype.String() + ">"
}

func (t tensorType) equal(u tensorType) bool {
	return t.dtype == u.dtype && slices.Equal(t.dims, u.dims)
}

// Module is a parsed program: its main function.
type Module struct {
	// Name is the module's symbol (the program name).
	Name string
	main *block
	// results are the declared types of main's results.
	results []tensorType
}

// Inputs lists the main function's parameters, in order, as tensors with
// the declared DType and Dims and no data.
func (m *Module) Inputs() []Tensor {
	out := make([]Tensor, len(m.main.args))
	for i, a := range m.main.args {
		out[i] = Tensor{DType: a.typ.dtype, Dims: slices.Clone(a.typ.dims)}
	}
	return out
}

// Run evaluates the main function. Inputs must have the declared dtypes
// and dims; f16/bf16 inputs are rounded to their type first. Results may
// share data with the inputs (a returned reshape of one does).
func (m *Module) Run(inputs []Tensor) ([]Tensor, error) {
	if len(inputs) != len(m.main.args) {
		return nil, fmt.Errorf("module %s: %d inputs given, main takes %d", m.Name, len(inputs), len(m.main.args))
	}
	args := make([]*Tensor, len(inputs))
	for i := range inputs {
		in := inputs[i]
		want := m.main.args[i]
		if err := in.check(); err != nil {
			return nil, fmt.Errorf("module %s: input %d (%%%s): %w", m.Name, i, want.name, err)
		}
		if !in.typ().equal(want.typ) {
			return nil, fmt.Errorf("module %s: input %d (%%%s) is %s, main takes %s", m.Name, i, want.name, in.typ(), want.typ)
		}
		if in.DType == F16 || in.DType == BF16 {
			r := in
			r.F32 = slices.Clone(in.F32)
			r.roundToType()
			in = r
		}
		args[i] = &in
	}
	outs, err := m.main.run(args, nil)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.Name, err)
	}
	res := make([]Tensor, len(outs))
	for i, o := range outs {
		if !o.typ().equal(m.results[i]) {
			return nil, fmt.Errorf("module %s: result %d is %s, main declares %s", m.Name, i, o.typ(), m.results[i])
		}
		res[i] = *o
	}
	return res, nil
}

// block is a function body or an op's region: named arguments, then
// statements ending in a return.
type block struct {
	args  []blockArg
	stmts []*stmt
	// ret names the returned values.
	ret []string
	// lastUse frees each value after the statement that last reads it,
	// so a long program does not hold every intermediate at once.
	lastUse [][]string
}

type blockArg struct {
	name string
	typ  tensorType
}

// stmt is one op: %result = "op"(operands) ({regions}) {attributes} : type.
type stmt struct {
	line     int
	result   string
	op       string
	operands []string
	inTypes  []tensorType
	outType  tensorType
	regions  []*block
	attrs    *attrs
	eval     evalFunc
}

// evalFunc computes an op's result from its operands, which have the
// declared operand types.
type evalFunc func(args []*Tensor) (*Tensor, error)

func (s *stmt) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: %s: %s", s.line, s.op, fmt.Sprintf(format, args...))
}

// env maps value names to tensors; a region sees its parent's values.
type env struct {
	vals   map[string]*Tensor
	parent *env
}

func (e *env) get(name string) (*Tensor, bool) {
	for ; e != nil; e = e.parent {
		if t, ok := e.vals[name]; ok {
			return t, true
		}
	}
	return nil, false
}

// run evaluates the block on args; parent is the enclosing scope (nil
// for main).
func (b *block) run(args []*Tensor, parent *env) ([]*Tensor, error) {
	e := &env{vals: make(map[string]*Tensor, len(b.args)+len(b.stmts)), parent: parent}
	for i, a := range b.args {
		e.vals[a.name] = args[i]
	}
	in := make([]*Tensor, 0, 4)
	for i, s := range b.stmts {
		in = in[:0]
		for j, name := range s.operands {
			t, ok := e.get(name)
			if !ok {
				return nil, s.errorf("operand %%%s is not defined", name)
			}
			if !t.typ().equal(s.inTypes[j]) {
				return nil, s.errorf("operand %d (%%%s) is %s, the op declares %s", j, name, t.typ(), s.inTypes[j])
			}
			in = append(in, t)
		}
		out, err := s.eval(in)
		if err != nil {
			return nil, s.errorf("%v", err)
		}
		if !out.typ().equal(s.outType) {
			return nil, s.errorf("computed %s, the text declares %s", out.typ(), s.outType)
		}
		e.vals[s.result] = out
		for _, name := range b.lastUse[i] {
			delete(e.vals, name)
		}
	}
	outs := make([]*Tensor, len(b.ret))
	for i, name := range b.ret {
		t, ok := e.get(name)
		if !ok {
			return nil, fmt.Errorf("returned value %%%s is not defined", name)
		}
		outs[i] = t
	}
	return outs, nil
}

// computeLastUse fills b.lastUse: after statement i, the values of this
// block read for the last time there (by the statement or its regions)
// are dropped. Block arguments and returned values are kept.
func (b *block) computeLastUse() {
	keep := map[string]bool{}
	for _, r := range b.ret {
		keep[r] = true
	}
	for _, a := range b.args {
		keep[a.name] = true
	}
	last := map[string]int{}
	for i, s := range b.stmts {
		for _, o := range s.operands {
			last[o] = i
		}
		for _, r := range s.regions {
			for _, o := range r.outerUses() {
				last[o] = i
			}
		}
	}
	b.lastUse = make([][]string, len(b.stmts))
	for name, i := range last {
		if !keep[name] {
			b.lastUse[i] = append(b.lastUse[i], name)
		}
	}
}

// outerUses lists the names a region reads from enclosing scopes: every
// name it uses that it does not define itself.
func (b *block) outerUses() []string {
	defined := map[string]bool{}
	for _, a := range b.args {
		defined[a.name] = true
	}
	var out []string
	use := func(name string) {
		if !defined[name] {
			out = append(out, name)
		}
	}
	for _, s := range b.stmts {
		for _, o := range s.operands {
			use(o)
		}
		for _, r := range s.regions {
			for _, o := range r.outerUses() {
				use(o)
			}
		}
		defined[s.result] = true
	}
	for _, o := range b.ret {
		use(o)
	}
	return out
}
