package hlo

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/notimplemented"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types"
	xshapes "github.com/gomlx/go-xla/types/shapes"
)

// supportedOps are the ops Function implements, for Capabilities.
var supportedOps = []compute.OpType{
	compute.OpTypeParameter, compute.OpTypeConstant, compute.OpTypeIdentity, compute.OpTypeIota,
	compute.OpTypeAdd, compute.OpTypeSub, compute.OpTypeMul, compute.OpTypeDiv, compute.OpTypeMax, compute.OpTypeMin, compute.OpTypePow,
	compute.OpTypeEqual, compute.OpTypeNotEqual, compute.OpTypeLessThan, compute.OpTypeLessOrEqual, compute.OpTypeGreaterThan, compute.OpTypeGreaterOrEqual,
	compute.OpTypeLogicalAnd, compute.OpTypeLogicalOr, compute.OpTypeLogicalNot,
	compute.OpTypeNeg, compute.OpTypeAbs, compute.OpTypeSign, compute.OpTypeExp, compute.OpTypeLog, compute.OpTypeSqrt, compute.OpTypeRsqrt,
	compute.OpTypeErf, compute.OpTypeLogistic, compute.OpTypeTanh, compute.OpTypeCos, compute.OpTypeSin, compute.OpTypeFloor, compute.OpTypeRound,
	compute.OpTypeReshape, compute.OpTypeTranspose, compute.OpTypeBroadcastInDim, compute.OpTypeConcatenate, compute.OpTypeSlice, compute.OpTypePad,
	compute.OpTypeWhere, compute.OpTypeClamp, compute.OpTypeConvertDType, compute.OpTypeGather,
	compute.OpTypeReduceSum, compute.OpTypeReduceMax, compute.OpTypeReduceMin,
	compute.OpTypeDotGeneral, compute.OpTypeConvGeneral,
}

// Function is the main function of a program being traced.
type Function struct {
	notimplemented.Function
	builder *Builder
	name    string
	fn      *stablehlo.Function

	paramNames []string
	params     []shapes.Shape
	outputs    []shapes.Shape
	returned   bool
	// reducers are the scalar reduction bodies, one per (op, dtype).
	reducers map[reducerKey]*stablehlo.Function
}

type reducerKey struct {
	op    compute.OpType
	dtype dtypes.DType
}

var _ compute.Function = (*Function)(nil)

// value is an op's output.
type value struct {
	v *stablehlo.Value
	b *Builder
}

func toXLA(s shapes.Shape) xshapes.Shape { return xshapes.Make(s.DType, slices.Clone(s.Dimensions)...) }

func fromXLA(s xshapes.Shape) shapes.Shape {
	return shapes.Make(s.DType, slices.Clone(s.Dimensions)...)
}

// Name implements compute.Function.
func (f *Function) Name() string { return f.name }

// Builder implements compute.Function.
func (f *Function) Builder() compute.Builder { return f.builder }

// Parent implements compute.Function.
func (f *Function) Parent() compute.Function { return nil }

func (f *Function) wrap(v *stablehlo.Value, err error) (compute.Value, error) {
	if err != nil {
		return nil, err
	}
	return &value{v: v, b: f.builder}, nil
}

// in unwraps op inputs, checking they were traced by this program.
func (f *Function) in(op string, vs ...compute.Value) ([]*stablehlo.Value, error) {
	if f.returned {
		return nil, fmt.Errorf("%s: program %q already returned", op, f.builder.name)
	}
	out := make([]*stablehlo.Value, len(vs))
	for i, v := range vs {
		n, ok := v.(*value)
		if !ok || n == nil || n.b != f.builder {
			return nil, fmt.Errorf("%s: input %d (%T) is not a value of program %q", op, i, v, f.builder.name)
		}
		out[i] = n.v
	}
	return out, nil
}

func (f *Function) in1(op string, v compute.Value) (*stablehlo.Value, error) {
	xs, err := f.in(op, v)
	if err != nil {
		return nil, err
	}
	return xs[0], nil
}

// Shape implements compute.Function.
func (f *Function) Shape(v compute.Value) (shapes.Shape, error) {
	x, err := f.in1("Shape", v)
	if err != nil {
		return shapes.Invalid(), err
	}
	return fromXLA(x.Shape()), nil
}

// Parameter implements compute.Function.
func (f *Function) Parameter(name string, shape shapes.Shape, sharding *compute.ShardingSpec) (compute.Value, error) {
	if sharding != nil {
		return nil, fmt.Errorf("parameter %q: sharding: %w", name, compute.ErrNotImplemented)
	}
	if shape.IsDynamic() {
		return nil, fmt.Errorf("parameter %q: dynamic shape %s: programs are traced per shape bucket", name, shape)
	}
	if f.returned {
		return nil, fmt.Errorf("parameter %q: program %q already returned", name, f.builder.name)
	}
	f.paramNames = append(f.paramNames, name)
	f.params = append(f.params, shape.Clone())
	return f.wrap(f.fn.NamedInput(name, toXLA(shape)))
}

// Constant implements compute.Function.
func (f *Function) Constant(flat any, dims ...int) (compute.Value, error) {
	return f.wrap(f.fn.ConstantFromFlatAndDimensions(flat, dims...))
}

// Return implements compute.Function.
func (f *Function) Return(outputs []compute.Value, shardings []*compute.ShardingSpec) error {
	if len(shardings) > 0 {
		return fmt.Errorf("return: sharding: %w", compute.ErrNotImplemented)
	}
	xs, err := f.in("Return", outputs...)
	if err != nil {
		return err
	}
	if err := f.fn.Return(xs...); err != nil {
		return err
	}
	for _, x := range xs {
		f.outputs = append(f.outputs, fromXLA(x.Shape()))
	}
	f.returned = true
	return nil
}

// Identity implements compute.Function: values are immutable, so the
// input itself is the identity.
func (f *Function) Identity(x compute.Value) (compute.Value, error) {
	if _, err := f.in1("Identity", x); err != nil {
		return nil, err
	}
	return x, nil
}

// Iota implements compute.Function.
func (f *Function) Iota(shape shapes.Shape, axis int) (compute.Value, error) {
	return f.wrap(f.fn.Iota(toXLA(shape), axis))
}

// broadcast2 applies compute's implicit broadcasting, which StableHLO
// does not have: a scalar against anything, or equal ranks whose
// dimensions match or are 1.
func (f *Function) broadcast2(op string, lhs, rhs compute.Value) (*stablehlo.Value, *stablehlo.Value, error) {
	xs, err := f.in(op, lhs, rhs)
	if err != nil {
		return nil, nil, err
	}
	l, r := xs[0], xs[1]
	ls, rs := l.Shape(), r.Shape()
	if ls.DType != rs.DType {
		return nil, nil, fmt.Errorf("%s: dtypes %s and %s differ", op, ls.DType, rs.DType)
	}
	if slices.Equal(ls.Dimensions, rs.Dimensions) {
		return l, r, nil
	}
	var dims []int
	switch {
	case ls.IsScalar():
		dims = rs.Dimensions
	case rs.IsScalar():
		dims = ls.Dimensions
	case ls.Rank() == rs.Rank():
		dims = make([]int, ls.Rank())
		for i := range dims {
			a, b := ls.Dimensions[i], rs.Dimensions[i]
			switch {
			case a == b || b == 1:
				dims[i] = a
			case a == 1:
				dims[i] = b
			default:
				return nil, nil, fmt.Errorf("%s: shapes %s and %s do not broadcast", op, ls, rs)
			}
		}
	default:
		return nil, nil, fmt.Errorf("%s: shapes %s and %s do not broadcast", op, ls, rs)
	}
	to := func(x *stablehlo.Value) (*stablehlo.Value, error) {
		s := x.Shape()
		if slices.Equal(s.Dimensions, dims) {
			return x, nil
		}
		var axes []int
		if !s.IsScalar() {
			axes = make([]int, len(dims))
			for i := range axes {
				axes[i] = i
			}
		}
		return stablehlo.BroadcastInDim(x, xshapes.Make(s.DType, dims...), axes)
	}
	if l, err = to(l); err != nil {
		return nil, nil, err
	}
	if r, err = to(r); err != nil {
		return nil, nil, err
	}
	return l, r, nil
}

func (f *Function) binary(op string, lhs, rhs compute.Value, build func(l, r *stablehlo.Value) (*stablehlo.Value, error)) (compute.Value, error) {
	l, r, err := f.broadcast2(op, lhs, rhs)
	if err != nil {
		return nil, err
	}
	return f.wrap(build(l, r))
}

func (f *Function) unary(op string, x compute.Value, build func(*stablehlo.Value) (*stablehlo.Value, error)) (compute.Value, error) {
	v, err := f.in1(op, x)
	if err != nil {
		return nil, err
	}
	return f.wrap(build(v))
}

// Add implements compute.Function.
func (f *Function) Add(l, r compute.Value) (compute.Value, error) {
	return f.binary("Add", l, r, stablehlo.Add)
}

// Sub implements compute.Function.
func (f *Function) Sub(l, r compute.Value) (compute.Value, error) {
	return f.binary("Sub", l, r, stablehlo.Subtract)
}

// Mul implements compute.Function.
func (f *Function) Mul(l, r compute.Value) (compute.Value, error) {
	return f.binary("Mul", l, r, stablehlo.Multiply)
}

// Div implements compute.Function.
func (f *Function) Div(l, r compute.Value) (compute.Value, error) {
	return f.binary("Div", l, r, stablehlo.Divide)
}

// Max implements compute.Function.
func (f *Function) Max(l, r compute.Value) (compute.Value, error) {
	return f.binary("Max", l, r, stablehlo.Maximum)
}

// Min implements compute.Function.
func (f *Function) Min(l, r compute.Value) (compute.Value, error) {
	return f.binary("Min", l, r, stablehlo.Minimum)
}

// Pow implements compute.Function.
func (f *Function) Pow(l, r compute.Value) (compute.Value, error) {
	return f.binary("Pow", l, r, stablehlo.Power)
}

// LogicalAnd implements compute.Function.
func (f *Function) LogicalAnd(l, r compute.Value) (compute.Value, error) {
	return f.binary("LogicalAnd", l, r, stablehlo.And)
}

// LogicalOr implements compute.Function.
func (f *Function) LogicalOr(l, r compute.Value) (compute.Value, error) {
	return f.binary("LogicalOr", l, r, stablehlo.Or)
}

func (f *Function) compare(op string, l, r compute.Value, dir types.ComparisonDirection) (compute.Value, error) {
	return f.binary(op, l, r, func(a, b *stablehlo.Value) (*stablehlo.Value, error) {
		dt := a.Shape().DType
		kind := types.CompareFloat
		switch {
		case dt.IsFloat():
		case dt.IsUnsigned() || dt == dtypes.Bool:
			kind = types.CompareUnsigned
		case dt.IsInt():
			kind = types.CompareSigned
		default:
			return nil, fmt.Errorf("%s on %s: %w", op, dt, compute.ErrNotImplemented)
		}
		return stablehlo.Compare(a, b, dir, kind)
	})
}

// Equal implements compute.Function.
func (f *Function) Equal(l, r compute.Value) (compute.Value, error) {
	return f.compare("Equal", l, r, types.CompareEQ)
}

// NotEqual implements compute.Function.
func (f *Function) NotEqual(l, r compute.Value) (compute.Value, error) {
	return f.compare("NotEqual", l, r, types.CompareNE)
}

// LessThan implements compute.Function.
func (f *Function) LessThan(l, r compute.Value) (compute.Value, error) {
	return f.compare("LessThan", l, r, types.CompareLT)
}

// LessOrEqual implements compute.Function.
func (f *Function) LessOrEqual(l, r compute.Value) (compute.Value, error) {
	return f.compare("LessOrEqual", l, r, types.CompareLE)
}

// GreaterThan implements compute.Function.
func (f *Function) GreaterThan(l, r compute.Value) (compute.Value, error) {
	return f.compare("GreaterThan", l, r, types.CompareGT)
}

// GreaterOrEqual implements compute.Function.
func (f *Function) GreaterOrEqual(l, r compute.Value) (compute.Value, error) {
	return f.compare("GreaterOrEqual", l, r, types.CompareGE)
}

// LogicalNot implements compute.Function.
func (f *Function) LogicalNot(x compute.Value) (compute.Value, error) {
	return f.unary("LogicalNot", x, stablehlo.Not)
}

// Neg implements compute.Function.
func (f *Function) Neg(x compute.Value) (compute.Value, error) {
	return f.unary("Neg", x, stablehlo.Negate)
}

// Abs implements compute.Function.
func (f *Function) Abs(x compute.Value) (compute.Value, error) {
	return f.unary("Abs", x, stablehlo.Abs)
}

// Sign implements compute.Function.
func (f *Function) Sign(x compute.Value) (compute.Value, error) {
	return f.unary("Sign", x, stablehlo.Sign)
}

// Exp implements compute.Function.
func (f *Function) Exp(x compute.Value) (compute.Value, error) {
	return f.unary("Exp", x, stablehlo.Exponential)
}

// Log implements compute.Function.
func (f *Function) Log(x compute.Value) (compute.Value, error) {
	return f.unary("Log", x, stablehlo.Log)
}

// Sqrt implements compute.Function.
func (f *Function) Sqrt(x compute.Value) (compute.Value, error) {
	return f.unary("Sqrt", x, stablehlo.Sqrt)
}

// Rsqrt implements compute.Function.
func (f *Function) Rsqrt(x compute.Value) (compute.Value, error) {
	return f.unary("Rsqrt", x, stablehlo.Rsqrt)
}

// Erf implements compute.Function.
func (f *Function) Erf(x compute.Value) (compute.Value, error) {
	return f.unary("Erf", x, stablehlo.Erf)
}

// Logistic implements compute.Function.
func (f *Function) Logistic(x compute.Value) (compute.Value, error) {
	return f.unary("Logistic", x, stablehlo.Logistic)
}

// Tanh implements compute.Function.
func (f *Function) Tanh(x compute.Value) (compute.Value, error) {
	return f.unary("Tanh", x, stablehlo.Tanh)
}

// Cos implements compute.Function.
func (f *Function) Cos(x compute.Value) (compute.Value, error) {
	return f.unary("Cos", x, stablehlo.Cosine)
}

// Sin implements compute.Function.
func (f *Function) Sin(x compute.Value) (compute.Value, error) {
	return f.unary("Sin", x, stablehlo.Sine)
}

// Floor implements compute.Function.
func (f *Function) Floor(x compute.Value) (compute.Value, error) {
	return f.unary("Floor", x, stablehlo.Floor)
}

// Round implements compute.Function: compute rounds half to even.
func (f *Function) Round(x compute.Value) (compute.Value, error) {
	return f.unary("Round", x, stablehlo.RoundNearestEven)
}

// ConvertDType implements compute.Function.
func (f *Function) ConvertDType(x compute.Value, dtype dtypes.DType) (compute.Value, error) {
	return f.unary("ConvertDType", x, func(v *stablehlo.Value) (*stablehlo.Value, error) { return stablehlo.Convert(v, dtype) })
}

// Reshape implements compute.Function.
func (f *Function) Reshape(x compute.Value, dims ...int) (compute.Value, error) {
	return f.unary("Reshape", x, func(v *stablehlo.Value) (*stablehlo.Value, error) {
		return stablehlo.Reshape(v, xshapes.Make(v.Shape().DType, dims...))
	})
}

// Transpose implements compute.Function.
func (f *Function) Transpose(x compute.Value, perm ...int) (compute.Value, error) {
	return f.unary("Transpose", x, func(v *stablehlo.Value) (*stablehlo.Value, error) { return stablehlo.Transpose(v, perm...) })
}

// BroadcastInDim implements compute.Function.
func (f *Function) BroadcastInDim(x compute.Value, shape shapes.Shape, axes []int) (compute.Value, error) {
	return f.unary("BroadcastInDim", x, func(v *stablehlo.Value) (*stablehlo.Value, error) {
		return stablehlo.BroadcastInDim(v, toXLA(shape), axes)
	})
}

// Concatenate implements compute.Function.
func (f *Function) Concatenate(axis int, operands ...compute.Value) (compute.Value, error) {
	xs, err := f.in("Concatenate", operands...)
	if err != nil {
		return nil, err
	}
	if len(xs) == 1 {
		return operands[0], nil
	}
	return f.wrap(stablehlo.Concatenate(axis, xs...))
}

// Slice implements compute.Function.
func (f *Function) Slice(x compute.Value, starts, limits, strides []int) (compute.Value, error) {
	return f.unary("Slice", x, func(v *stablehlo.Value) (*stablehlo.Value, error) {
		if len(strides) == 0 {
			strides = slices.Repeat([]int{1}, len(starts))
		}
		return stablehlo.Slice(v, starts, limits, strides)
	})
}

// Pad implements compute.Function.
func (f *Function) Pad(x, fill compute.Value, axes ...compute.PadAxis) (compute.Value, error) {
	xs, err := f.in("Pad", x, fill)
	if err != nil {
		return nil, err
	}
	rank := xs[0].Shape().Rank()
	if len(axes) > rank {
		return nil, fmt.Errorf("Pad: %d axes for a rank-%d operand", len(axes), rank)
	}
	lo, hi, interior := make([]int, rank), make([]int, rank), make([]int, rank)
	for i, a := range axes {
		lo[i], hi[i], interior[i] = a.Start, a.End, a.Interior
	}
	return f.wrap(stablehlo.Pad(xs[0], xs[1], lo, hi, interior))
}

// Where implements compute.Function: scalar branches are broadcast to the
// output shape, which stablehlo.select does not do.
func (f *Function) Where(cond, onTrue, onFalse compute.Value) (compute.Value, error) {
	xs, err := f.in("Where", cond, onTrue, onFalse)
	if err != nil {
		return nil, err
	}
	dims := xs[0].Shape().Dimensions
	for _, b := range xs[1:] {
		if !b.Shape().IsScalar() {
			dims = b.Shape().Dimensions
		}
	}
	for i := 1; i < 3; i++ {
		if s := xs[i].Shape(); s.IsScalar() && len(dims) > 0 {
			if xs[i], err = stablehlo.BroadcastInDim(xs[i], xshapes.Make(s.DType, dims...), nil); err != nil {
				return nil, err
			}
		}
	}
	return f.wrap(stablehlo.Select(xs[0], xs[1], xs[2]))
}

// Clamp implements compute.Function.
func (f *Function) Clamp(lo, x, hi compute.Value) (compute.Value, error) {
	xs, err := f.in("Clamp", lo, x, hi)
	if err != nil {
		return nil, err
	}
	return f.wrap(stablehlo.Clamp(xs[0], xs[1], xs[2]))
}

// Gather implements compute.Function.
func (f *Function) Gather(operand, indices compute.Value, indexVectorAxis int, offsetOutputAxes, collapsedSliceAxes, startIndexMap, sliceSizes []int, sorted bool) (compute.Value, error) {
	xs, err := f.in("Gather", operand, indices)
	if err != nil {
		return nil, err
	}
	return f.wrap(stablehlo.Gather(xs[0], xs[1], indexVectorAxis, offsetOutputAxes, collapsedSliceAxes, nil, nil, startIndexMap, sliceSizes, sorted))
}

// reducer returns the scalar body of a reduction, built once per program.
func (f *Function) reducer(op compute.OpType, dt dtypes.DType) (*stablehlo.Function, error) {
	key := reducerKey{op, dt}
	if r, ok := f.reducers[key]; ok {
		return r, nil
	}
	r := f.fn.Closure()
	a, err := r.NamedInput("lhs", xshapes.Make(dt))
	if err != nil {
		return nil, err
	}
	b, err := r.NamedInput("rhs", xshapes.Make(dt))
	if err != nil {
		return nil, err
	}
	var out *stablehlo.Value
	switch op {
	case compute.OpTypeReduceSum:
		out, err = stablehlo.Add(a, b)
	case compute.OpTypeReduceMax:
		out, err = stablehlo.Maximum(a, b)
	case compute.OpTypeReduceMin:
		out, err = stablehlo.Minimum(a, b)
	default:
		return nil, fmt.Errorf("reduction %s: %w", op, compute.ErrNotImplemented)
	}
	if err != nil {
		return nil, err
	}
	if err := r.Return(out); err != nil {
		return nil, err
	}
	if f.reducers == nil {
		f.reducers = map[reducerKey]*stablehlo.Function{}
	}
	f.reducers[key] = r
	return r, nil
}

// reduce folds x over axes (all axes when none are given) starting from
// the reduction's identity.
func (f *Function) reduce(op compute.OpType, x compute.Value, axes []int) (compute.Value, error) {
	v, err := f.in1(op.String(), x)
	if err != nil {
		return nil, err
	}
	dt := v.Shape().DType
	if dt.GoType() == nil {
		return nil, fmt.Errorf("%s on %s: %w", op, dt, compute.ErrNotImplemented)
	}
	var init any
	switch op {
	case compute.OpTypeReduceSum:
		init = reflect.Zero(dt.GoType()).Interface()
	case compute.OpTypeReduceMax:
		init = dt.LowestValue() // -Inf for floats
	case compute.OpTypeReduceMin:
		init = dt.HighestValue()
	}
	initV, err := f.fn.ConstantFromScalar(init)
	if err != nil {
		return nil, err
	}
	body, err := f.reducer(op, dt)
	if err != nil {
		return nil, err
	}
	if len(axes) == 0 {
		axes = make([]int, v.Shape().Rank())
		for i := range axes {
			axes[i] = i
		}
	}
	return f.wrap(stablehlo.Reduce(v, initV, body, axes...))
}

// ReduceSum implements compute.Function.
func (f *Function) ReduceSum(x compute.Value, axes ...int) (compute.Value, error) {
	return f.reduce(compute.OpTypeReduceSum, x, axes)
}

// ReduceMax implements compute.Function.
func (f *Function) ReduceMax(x compute.Value, axes ...int) (compute.Value, error) {
	return f.reduce(compute.OpTypeReduceMax, x, axes)
}

// ReduceMin implements compute.Function.
func (f *Function) ReduceMin(x compute.Value, axes ...int) (compute.Value, error) {
	return f.reduce(compute.OpTypeReduceMin, x, axes)
}

// DotGeneral implements compute.Function. Mixed accumulation is left to
// GoMLX's fallback (convert the inputs first), which exports the same math.
func (f *Function) DotGeneral(lhs compute.Value, lhsContracting, lhsBatch []int, rhs compute.Value, rhsContracting, rhsBatch []int, cfg compute.DotGeneralConfig) (compute.Value, error) {
	xs, err := f.in("DotGeneral", lhs, rhs)
	if err != nil {
		return nil, err
	}
	dt := xs[0].Shape().DType
	if cfg.AccumulatorDType != dtypes.InvalidDType && cfg.AccumulatorDType != dt ||
		cfg.OutputDType != dtypes.InvalidDType && cfg.OutputDType != dt {
		return nil, fmt.Errorf("DotGeneral with accumulator %s / output %s on %s inputs: %w", cfg.AccumulatorDType, cfg.OutputDType, dt, compute.ErrNotImplemented)
	}
	return f.wrap(stablehlo.DotGeneral(xs[0], lhsContracting, lhsBatch, xs[1], rhsContracting, rhsBatch).Done())
}

// ConvGeneral implements compute.Function.
func (f *Function) ConvGeneral(input, kernel compute.Value, axes compute.ConvolveAxesConfig, strides []int, paddings [][2]int, inputDilations, kernelDilations []int, channelGroups, batchGroups int) (compute.Value, error) {
	xs, err := f.in("ConvGeneral", input, kernel)
	if err != nil {
		return nil, err
	}
	channelGroups, batchGroups = max(channelGroups, 1), max(batchGroups, 1)
	return f.wrap(stablehlo.Convolution(xs[0], xs[1], strides, paddings, inputDilations, kernelDilations,
		axes.InputBatch, axes.InputChannels, axes.InputSpatial,
		axes.KernelInputChannels, axes.KernelOutputChannels, axes.KernelSpatial,
		axes.OutputBatch, axes.OutputChannels, axes.OutputSpatial,
		channelGroups, batchGroups, types.DotGeneralPrecisionDefault, types.DotGeneralPrecisionDefault))
}
