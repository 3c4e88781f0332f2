package interp

import (
	"cmp"
	"errors"
	"math"
	"slices"
)

// builders prepare each supported op: they read its attributes (through
// the attrReader, which reports anything unexpected) and return its
// evaluator.
var builders map[string]func(s *stmt, r *attrReader) evalFunc

func init() {
	builders = map[string]func(s *stmt, r *attrReader) evalFunc{
		"stablehlo.constant":         buildConstant,
		"stablehlo.iota":             buildIota,
		"stablehlo.convert":          buildConvert,
		"stablehlo.compare":          buildCompare,
		"stablehlo.select":           buildSelect,
		"stablehlo.clamp":            buildClamp,
		"stablehlo.reshape":          buildReshape,
		"stablehlo.transpose":        buildTranspose,
		"stablehlo.broadcast_in_dim": buildBroadcastInDim,
		"stablehlo.concatenate":      buildConcatenate,
		"stablehlo.slice":            buildSlice,
		"stablehlo.pad":              buildPad,
		"stablehlo.gather":           buildGather,
		"stablehlo.reduce":           buildReduce,
		"stablehlo.dot_general":      buildDotGeneral,
		"stablehlo.convolution":      buildConvolution,
	}
	for name, op := range unaryOps {
		builders[name] = unaryBuilder(op)
	}
	for name, op := range binaryOps {
		builders[name] = binaryBuilder(op)
	}
}

// unaryOp defines an elementwise op per element kind; a nil function
// means the op does not take that kind.
type unaryOp struct {
	f func(float64) float64
	i func(int64) int64
	b func(bool) bool
}

// Float functions run in float64 and round once to float32: exact for
// negate/abs/floor/sqrt, and closer than any float32 library for the
// transcendentals (the spec leaves their accuracy to the implementation).
var unaryOps = map[string]unaryOp{
	"stablehlo.negate":             {f: func(x float64) float64 { return -x }, i: func(x int64) int64 { return -x }},
	"stablehlo.abs":                {f: math.Abs, i: func(x int64) int64 { return max(x, -x) }},
	"stablehlo.sign":               {f: signFloat, i: func(x int64) int64 { return int64(sgn(x)) }},
	"stablehlo.floor":              {f: math.Floor},
	"stablehlo.round_nearest_even": {f: math.RoundToEven},
	"stablehlo.exponential":        {f: math.Exp},
	"stablehlo.log":                {f: math.Log},
	"stablehlo.sqrt":               {f: math.Sqrt},
	"stablehlo.rsqrt":              {f: func(x float64) float64 { return 1 / math.Sqrt(x) }},
	"stablehlo.tanh":               {f: math.Tanh},
	"stablehlo.cosine":             {f: math.Cos},
	"stablehlo.sine":               {f: math.Sin},
	"stablehlo.logistic":           {f: func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }},
	"chlo.erf":                     {f: math.Erf},
	"stablehlo.not":                {i: func(x int64) int64 { return ^x }, b: func(x bool) bool { return !x }},
}

func signFloat(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return x
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return x // ±0
}

func sgn(x int64) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

func unaryBuilder(op unaryOp) func(s *stmt, r *attrReader) evalFunc {
	return func(s *stmt, r *attrReader) evalFunc {
		if !r.operands(1) {
			return nil
		}
		dt := s.inTypes[0].dtype
		if !supports(dt, op.f != nil, op.i != nil, op.b != nil) {
			r.fail("unsupported on %s", dt)
		}
		if !s.outType.equal(s.inTypes[0]) {
			r.fail("result %s differs from operand %s", s.outType, s.inTypes[0])
		}
		return func(in []*Tensor) (*Tensor, error) {
			x := in[0]
			out := newTensor(x.DType, x.Dims)
			switch {
			case x.DType.IsFloat():
				for i, v := range x.F32 {
					out.F32[i] = float32(op.f(float64(v)))
				}
			case x.DType.IsInt():
				for i, v := range x.Ints {
					out.Ints[i] = op.i(v)
				}
			default:
				for i, v := range x.Bools {
					out.Bools[i] = op.b(v)
				}
			}
			out.roundToType()
			return out, nil
		}
	}
}

func supports(dt DType, float, ints, bools bool) bool {
	return dt.IsFloat() && float || dt.IsInt() && ints || dt == I1 && bools
}

// binaryOp defines an elementwise op of two operands of one shape.
type binaryOp struct {
	f func(a, b float64) float64
	i func(a, b int64) (int64, error)
	b func(a, b bool) bool
}

var errDivByZero = errors.New("integer division by zero")

// Float add/subtract/multiply/divide in float64 then rounded to float32
// give exactly the IEEE float32 result (float64 has more than twice the
// bits). maximum/minimum propagate NaN as the spec's IEEE maximum does.
var binaryOps = map[string]binaryOp{
	"stablehlo.add":      {f: func(a, b float64) float64 { return a + b }, i: func(a, b int64) (int64, error) { return a + b, nil }},
	"stablehlo.subtract": {f: func(a, b float64) float64 { return a - b }, i: func(a, b int64) (int64, error) { return a - b, nil }},
	"stablehlo.multiply": {f: func(a, b float64) float64 { return a * b }, i: func(a, b int64) (int64, error) { return a * b, nil }},
	"stablehlo.divide": {f: func(a, b float64) float64 { return a / b }, i: func(a, b int64) (int64, error) {
		if b == 0 {
			return 0, errDivByZero
		}
		return a / b, nil // truncates toward zero, as the spec
	}},
	"stablehlo.maximum": {f: math.Max, i: func(a, b int64) (int64, error) { return max(a, b), nil }},
	"stablehlo.minimum": {f: math.Min, i: func(a, b int64) (int64, error) { return min(a, b), nil }},
	"stablehlo.power":   {f: math.Pow, i: intPow},
	"stablehlo.and":     {i: func(a, b int64) (int64, error) { return a & b, nil }, b: func(a, b bool) bool { return a && b }},
	"stablehlo.or":      {i: func(a, b int64) (int64, error) { return a | b, nil }, b: func(a, b bool) bool { return a || b }},
}

func intPow(a, b int64) (int64, error) {
	if b < 0 {
		return 0, errors.New("integer power with a negative exponent")
	}
	r := int64(1)
	for ; b > 0; b >>= 1 {
		if b&1 == 1 {
			r *= a
		}
		a *= a
	}
	return r, nil
}

func binaryBuilder(op binaryOp) func(s *stmt, r *attrReader) evalFunc {
	return func(s *stmt, r *attrReader) evalFunc {
		if !r.operands(2) {
			return nil
		}
		// StableHLO has no implicit broadcasting: both operands and the
		// result have one type.
		if !s.inTypes[0].equal(s.inTypes[1]) || !s.inTypes[0].equal(s.outType) {
			r.fail("operands %s, %s and result %s differ", s.inTypes[0], s.inTypes[1], s.outType)
			return nil
		}
		dt := s.outType.dtype
		if !supports(dt, op.f != nil, op.i != nil, op.b != nil) {
			r.fail("unsupported on %s", dt)
		}
		return func(in []*Tensor) (*Tensor, error) {
			x, y := in[0], in[1]
			out := newTensor(x.DType, x.Dims)
			switch {
			case x.DType.IsFloat():
				for i, v := range x.F32 {
					out.F32[i] = float32(op.f(float64(v), float64(y.F32[i])))
				}
			case x.DType.IsInt():
				for i, v := range x.Ints {
					var err error
					if out.Ints[i], err = op.i(v, y.Ints[i]); err != nil {
						return nil, err
					}
				}
			default:
				for i, v := range x.Bools {
					out.Bools[i] = op.b(v, y.Bools[i])
				}
			}
			out.roundToType()
			return out, nil
		}
	}
}

// buildCompare: compare_type says how to order (FLOAT: IEEE, so any
// comparison with NaN is false except NE; SIGNED; UNSIGNED, which for i1
// orders false < true).
func buildCompare(s *stmt, r *attrReader) evalFunc {
	if !r.operands(2) {
		return nil
	}
	dir := r.enum("comparison_direction", "comparison_direction", "EQ", "NE", "LT", "LE", "GT", "GE")
	kind := r.enum("compare_type", "comparison_type", "FLOAT", "SIGNED", "UNSIGNED")
	dt := s.inTypes[0].dtype
	if !s.inTypes[0].equal(s.inTypes[1]) || s.outType.dtype != I1 || !slices.Equal(s.outType.dims, s.inTypes[0].dims) {
		r.fail("operands %s, %s and result %s do not fit", s.inTypes[0], s.inTypes[1], s.outType)
	}
	if kind == "FLOAT" && !dt.IsFloat() || kind == "SIGNED" && !dt.IsInt() || kind == "UNSIGNED" && dt != I1 {
		r.fail("compare_type %s on %s is not supported", kind, dt)
	}
	// test applies the direction to a three-way comparison c; unordered
	// (NaN) operands compare unequal and nothing else.
	test := func(c int, ordered bool) bool {
		if !ordered {
			return dir == "NE"
		}
		switch dir {
		case "EQ":
			return c == 0
		case "NE":
			return c != 0
		case "LT":
			return c < 0
		case "LE":
			return c <= 0
		case "GT":
			return c > 0
		}
		return c >= 0
	}
	return func(in []*Tensor) (*Tensor, error) {
		x, y := in[0], in[1]
		out := newTensor(I1, x.Dims)
		for i := range out.Bools {
			switch {
			case dt.IsFloat():
				a, b := x.F32[i], y.F32[i]
				c := 0
				if a < b {
					c = -1
				} else if a > b {
					c = 1
				}
				out.Bools[i] = test(c, a == a && b == b)
			case dt.IsInt():
				out.Bools[i] = test(cmp.Compare(x.Ints[i], y.Ints[i]), true)
			default:
				a, b := 0, 0
				if x.Bools[i] {
					a = 1
				}
				if y.Bools[i] {
					b = 1
				}
				out.Bools[i] = test(a-b, true)
			}
		}
		return out, nil
	}
}

// buildSelect: pred is a scalar or has the result's shape.
func buildSelect(s *stmt, r *attrReader) evalFunc {
	if !r.operands(3) {
		return nil
	}
	pred, t, f := s.inTypes[0], s.inTypes[1], s.inTypes[2]
	if pred.dtype != I1 || !t.equal(f) || !t.equal(s.outType) || len(pred.dims) != 0 && !slices.Equal(pred.dims, t.dims) {
		r.fail("operand types %s, %s, %s do not fit result %s", pred, t, f, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) {
		p, a, b := in[0], in[1], in[2]
		n := a.Size()
		idx := make([]int, n)
		for i := range idx {
			pi := i
			if len(p.Dims) == 0 {
				pi = 0
			}
			if p.Bools[pi] {
				idx[i] = i
			} else {
				idx[i] = n + i // from b
			}
		}
		return gatherFlat(a.Dims, idx, a, b), nil
	}
}

// buildClamp: min and max are scalars or have the operand's shape.
func buildClamp(s *stmt, r *attrReader) evalFunc {
	if !r.operands(3) {
		return nil
	}
	lo, x, hi := s.inTypes[0], s.inTypes[1], s.inTypes[2]
	for _, b := range []tensorType{lo, hi} {
		if b.dtype != x.dtype || len(b.dims) != 0 && !slices.Equal(b.dims, x.dims) {
			r.fail("bound %s does not fit operand %s", b, x)
		}
	}
	if !x.equal(s.outType) || !x.dtype.IsFloat() && !x.dtype.IsInt() {
		r.fail("unsupported operand %s / result %s", x, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) {
		lo, x, hi := in[0], in[1], in[2]
		at := func(b *Tensor, i int) int {
			if len(b.Dims) == 0 {
				return 0
			}
			return i
		}
		out := newTensor(x.DType, x.Dims)
		for i := range x.Size() {
			if x.DType.IsFloat() {
				out.F32[i] = float32(math.Min(math.Max(float64(x.F32[i]), float64(lo.F32[at(lo, i)])), float64(hi.F32[at(hi, i)])))
			} else {
				out.Ints[i] = min(max(x.Ints[i], lo.Ints[at(lo, i)]), hi.Ints[at(hi, i)])
			}
		}
		return out, nil
	}
}

// buildConvert changes the element type: floats round to nearest even,
// float to integer truncates toward zero, anything to i1 is "!= 0".
func buildConvert(s *stmt, r *attrReader) evalFunc {
	if !r.operands(1) {
		return nil
	}
	from, to := s.inTypes[0], s.outType
	if !slices.Equal(from.dims, to.dims) {
		r.fail("operand %s and result %s differ in shape", from, to)
	}
	return func(in []*Tensor) (*Tensor, error) {
		x := in[0]
		out := newTensor(to.dtype, x.Dims)
		for i := range x.Size() {
			switch {
			case from.dtype.IsFloat() && to.dtype.IsFloat():
				out.F32[i] = x.F32[i]
			case from.dtype.IsFloat() && to.dtype.IsInt():
				v := float64(x.F32[i])
				if math.IsNaN(v) || math.Abs(v) >= 1<<63 {
					return nil, errors.New("float to integer conversion of a NaN or out-of-range value")
				}
				out.Ints[i] = int64(v)
			case from.dtype.IsFloat():
				out.Bools[i] = x.F32[i] != 0
			case from.dtype.IsInt() && to.dtype.IsFloat():
				out.F32[i] = float32(x.Ints[i])
			case from.dtype.IsInt() && to.dtype.IsInt():
				out.Ints[i] = x.Ints[i]
			case from.dtype.IsInt():
				out.Bools[i] = x.Ints[i] != 0
			default: // from i1
				v := 0
				if x.Bools[i] {
					v = 1
				}
				switch {
				case to.dtype.IsFloat():
					out.F32[i] = float32(v)
				case to.dtype.IsInt():
					out.Ints[i] = int64(v)
				default:
					out.Bools[i] = v == 1
				}
			}
		}
		out.roundToType()
		return out, nil
	}
}
