package interp

import (
	"fmt"
	"math"
	"slices"
)

// buildReduce folds the operand over dimensions, starting from the init
// value, with the body region (a scalar function of two values). The
// spec leaves the order of the fold to the implementation; this one goes
// in row-major order. Bodies that are a single add / maximum / minimum /
// multiply / and / or of the two arguments run directly (float sums in
// float64); any other body is evaluated as a region, element by element.
func buildReduce(s *stmt, r *attrReader) evalFunc {
	if len(s.operands) != 2 {
		r.fail("%d operands: only one input with one init value is supported", len(s.operands))
		return nil
	}
	if len(s.regions) != 1 {
		r.fail("want one body region, got %d", len(s.regions))
		return nil
	}
	dimsAttr := r.ints("dimensions")
	in, init, body := s.inTypes[0], s.inTypes[1], s.regions[0]
	if len(init.dims) != 0 || init.dtype != in.dtype || s.outType.dtype != in.dtype {
		r.fail("operand %s, init %s and result %s do not fit", in, init, s.outType)
	}
	scalar := tensorType{dtype: in.dtype, dims: []int{}}
	if len(body.args) != 2 || !body.args[0].typ.equal(scalar) || !body.args[1].typ.equal(scalar) || len(body.ret) != 1 {
		r.fail("the body must take two %s and return one", scalar)
		return nil
	}
	if len(body.outerUses()) > 0 {
		r.fail("a body reading values outside it is not supported")
	}
	reduced := make([]bool, len(in.dims))
	var keep []int
	for _, d := range dimsAttr {
		if d < 0 || d >= len(in.dims) || reduced[d] {
			r.fail("bad dimensions %v for %s", dimsAttr, in)
			return nil
		}
		reduced[d] = true
	}
	for d, n := range in.dims {
		if !reduced[d] {
			keep = append(keep, n)
		}
	}
	if !slices.Equal(keep, s.outType.dims) {
		r.fail("reducing %v of %s gives %v, result %s", dimsAttr, in, keep, s.outType)
	}
	combine := simpleBody(body)
	if combine == "" {
		combine = "region"
	}
	if (combine == "and" || combine == "or") && in.dtype.IsFloat() {
		r.fail("body %s on %s", combine, in.dtype)
	}
	return func(args []*Tensor) (*Tensor, error) {
		x, init := args[0], args[1]
		// outIdx[k] is the result element operand element k folds into:
		// the strides of kept axes, 0 on reduced ones.
		outStrides := rowMajorStrides(keep)
		strides := make([]int, len(x.Dims))
		j := 0
		for d := range x.Dims {
			if !reduced[d] {
				strides[d] = outStrides[j]
				j++
			}
		}
		outIdx := stridedIndex(x.Dims, strides, 0)
		out := newTensor(x.DType, keep)
		n := out.Size()
		switch {
		case combine == "region":
			return reduceWithRegion(body, x, init, out, outIdx)
		case x.DType.IsFloat():
			acc := make([]float64, n)
			for i := range acc {
				acc[i] = float64(init.F32[0])
			}
			fold := map[string]func(a, b float64) float64{
				"add":      func(a, b float64) float64 { return a + b },
				"multiply": func(a, b float64) float64 { return a * b },
				"maximum":  math.Max,
				"minimum":  math.Min,
			}[combine]
			for k, v := range x.F32 {
				acc[outIdx[k]] = fold(acc[outIdx[k]], float64(v))
			}
			for i, v := range acc {
				out.F32[i] = float32(v)
			}
		case x.DType.IsInt():
			for i := range out.Ints {
				out.Ints[i] = init.Ints[0]
			}
			op := binaryOps["stablehlo."+combine].i
			for k, v := range x.Ints {
				o := outIdx[k]
				var err error
				if out.Ints[o], err = op(out.Ints[o], v); err != nil {
					return nil, err
				}
			}
		default:
			op := binaryOps["stablehlo."+combine].b
			if op == nil {
				return nil, fmt.Errorf("body %s on i1", combine)
			}
			for i := range out.Bools {
				out.Bools[i] = init.Bools[0]
			}
			for k, v := range x.Bools {
				out.Bools[outIdx[k]] = op(out.Bools[outIdx[k]], v)
			}
		}
		out.roundToType()
		return out, nil
	}
}

// simpleBody recognizes a body that applies one commutative op to its two
// arguments and returns the result, returning the op's short name ("add"),
// or "" for any other body.
func simpleBody(b *block) string {
	if len(b.stmts) != 1 || len(b.ret) != 1 {
		return ""
	}
	s := b.stmts[0]
	a0, a1 := b.args[0].name, b.args[1].name
	if b.ret[0] != s.result || len(s.operands) != 2 || len(s.regions) > 0 || s.attrs.len() > 0 ||
		!(s.operands[0] == a0 && s.operands[1] == a1 || s.operands[0] == a1 && s.operands[1] == a0) {
		return ""
	}
	for _, name := range []string{"add", "multiply", "maximum", "minimum", "and", "or"} {
		if s.op == "stablehlo."+name {
			return name
		}
	}
	return ""
}

// reduceWithRegion folds by running the body on scalar tensors.
func reduceWithRegion(body *block, x, init, out *Tensor, outIdx []int) (*Tensor, error) {
	acc := make([]*Tensor, out.Size())
	for i := range acc {
		acc[i] = init
	}
	for k := range outIdx {
		elem := gatherFlat([]int{}, []int{k}, x)
		res, err := body.run([]*Tensor{acc[outIdx[k]], elem}, nil)
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		if !res[0].typ().equal(init.typ()) {
			return nil, fmt.Errorf("body returned %s, want %s", res[0].typ(), init.typ())
		}
		acc[outIdx[k]] = res[0]
	}
	idx := make([]int, len(acc))
	for i := range idx {
		idx[i] = i
	}
	return gatherFlat(out.Dims, idx, acc...), nil
}

// buildDotGeneral: the result's axes are the batching axes, then lhs's
// free axes, then rhs's free axes (each in operand order); each element
// sums lhs·rhs over the paired contracting axes. Both operands are first
// copied to [batch, free, contracting] order so the sum is three loops.
func buildDotGeneral(s *stmt, r *attrReader) evalFunc {
	if !r.operands(2) {
		return nil
	}
	f := r.fields("dot_dimension_numbers", "stablehlo.dot", "lhs_batching_dimensions", "rhs_batching_dimensions",
		"lhs_contracting_dimensions", "rhs_contracting_dimensions")
	r.precision()
	lb, rb, lc, rc := f["lhs_batching_dimensions"], f["rhs_batching_dimensions"], f["lhs_contracting_dimensions"], f["rhs_contracting_dimensions"]
	lt, rt := s.inTypes[0], s.inTypes[1]
	if r.err != nil {
		return nil
	}
	if len(lb) != len(rb) || len(lc) != len(rc) || lt.dtype != rt.dtype || s.outType.dtype != lt.dtype || !lt.dtype.IsFloat() {
		r.fail("dimension numbers %v or types %s, %s -> %s not supported", f, lt, rt, s.outType)
		return nil
	}
	free := func(rank int, used ...[]int) []int {
		var out []int
		for d := range rank {
			if !slices.Contains(used[0], d) && !slices.Contains(used[1], d) {
				out = append(out, d)
			}
		}
		return out
	}
	lf, rf := free(len(lt.dims), lb, lc), free(len(rt.dims), rb, rc)
	var dims []int
	for i := range lb {
		if lt.dims[lb[i]] != rt.dims[rb[i]] {
			r.fail("batching axes %d and %d differ in size", lb[i], rb[i])
		}
		dims = append(dims, lt.dims[lb[i]])
	}
	for i := range lc {
		if lt.dims[lc[i]] != rt.dims[rc[i]] {
			r.fail("contracting axes %d and %d differ in size", lc[i], rc[i])
		}
	}
	for _, d := range lf {
		dims = append(dims, lt.dims[d])
	}
	for _, d := range rf {
		dims = append(dims, rt.dims[d])
	}
	if len(lb)+len(lc)+len(lf) != len(lt.dims) || len(rb)+len(rc)+len(rf) != len(rt.dims) {
		r.fail("an axis is both batching and contracting")
	}
	if !slices.Equal(dims, s.outType.dims) {
		r.fail("dot_general has shape %v, result %s", dims, s.outType)
	}
	size := func(t tensorType, axes []int) int {
		n := 1
		for _, a := range axes {
			n *= t.dims[a]
		}
		return n
	}
	B, M, N, K := size(lt, lb), size(lt, lf), size(rt, rf), size(lt, lc)
	return func(in []*Tensor) (*Tensor, error) {
		lhs := permuted(in[0], slices.Concat(lb, lf, lc)) // [B, M, K]
		rhs := permuted(in[1], slices.Concat(rb, rc, rf)) // [B, K, N]
		out := newTensor(s.outType.dtype, dims)
		acc := make([]float64, N)
		for b := range B {
			for m := range M {
				clear(acc)
				row := lhs.F32[(b*M+m)*K : (b*M+m+1)*K]
				for k, a := range row {
					av := float64(a)
					col := rhs.F32[(b*K+k)*N : (b*K+k+1)*N]
					for n, w := range col {
						acc[n] += av * float64(w)
					}
				}
				o := out.F32[(b*M+m)*N : (b*M+m+1)*N]
				for n, v := range acc {
					o[n] = float32(v)
				}
			}
		}
		out.roundToType()
		return out, nil
	}
}

// permuted copies x with its axes in the given order.
func permuted(x *Tensor, perm []int) *Tensor {
	st := rowMajorStrides(x.Dims)
	dims, strides := make([]int, len(perm)), make([]int, len(perm))
	for k, p := range perm {
		dims[k], strides[k] = x.Dims[p], st[p]
	}
	return gatherFlat(dims, stridedIndex(dims, strides, 0), x)
}

// convolution is a prepared convolution: dimension numbers and window.
type convolution struct {
	dn                  convDims
	strides, lhsDil     []int
	rhsDil              []int
	padLo, padHi        []int
	reversal            []bool
	groups              int
	outSpatial, kSizes  []int
	inSpatialSizes      []int
	batch, inC, kIn, kO int
}

// buildConvolution implements the spec's convolution with
// feature_group_count (batch_group_count must be 1). For each output
// position p and window position k along a spatial axis, the input
// coordinate in the lhs-dilated, padded input is p·stride + k·rhs_dilation;
// it reads an input element when, after removing the low padding, it falls
// on a multiple of lhs_dilation inside the input, and zero otherwise.
// Output feature o of group g = o / (out_features/groups) reads input
// features g·kernel_in_features + i.
func buildConvolution(s *stmt, r *attrReader) evalFunc {
	if !r.operands(2) {
		return nil
	}
	c := &convolution{dn: r.convDims("dimension_numbers")}
	c.strides, c.lhsDil, c.rhsDil = r.ints("window_strides"), r.ints("lhs_dilation"), r.ints("rhs_dilation")
	c.reversal = r.bools("window_reversal")
	c.groups = r.int("feature_group_count")
	if bg := r.int("batch_group_count"); bg != 1 {
		r.fail("batch_group_count %d is not supported", bg)
	}
	r.precision()
	pad := r.dense("padding")
	if r.err != nil {
		return nil
	}
	lt, kt, ot := s.inTypes[0], s.inTypes[1], s.outType
	ns := len(c.dn.inSpatial)
	if len(lt.dims) != ns+2 || len(kt.dims) != ns+2 || len(ot.dims) != ns+2 || len(c.dn.kSpatial) != ns || len(c.dn.outSpatial) != ns {
		r.fail("dimension numbers do not fit %s, %s -> %s", lt, kt, ot)
		return nil
	}
	if len(c.strides) != ns || len(c.lhsDil) != ns || len(c.rhsDil) != ns || len(c.reversal) != ns ||
		!slices.Equal(pad.Dims, []int{ns, 2}) || !pad.DType.IsInt() {
		r.fail("window attributes do not have %d spatial dimensions", ns)
		return nil
	}
	if !lt.dtype.IsFloat() || kt.dtype != lt.dtype || ot.dtype != lt.dtype {
		r.fail("types %s, %s -> %s not supported", lt, kt, ot)
		return nil
	}
	c.batch, c.inC = lt.dims[c.dn.inBatch], lt.dims[c.dn.inFeature]
	c.kIn, c.kO = kt.dims[c.dn.kIn], kt.dims[c.dn.kOut]
	if c.groups < 1 || c.inC != c.kIn*c.groups || c.kO%c.groups != 0 {
		r.fail("%d input features, kernel %d in / %d out, %d groups do not fit", c.inC, c.kIn, c.kO, c.groups)
		return nil
	}
	want := make([]int, ns+2)
	want[c.dn.outBatch], want[c.dn.outFeature] = c.batch, c.kO
	for i := range ns {
		c.padLo = append(c.padLo, int(pad.Ints[2*i]))
		c.padHi = append(c.padHi, int(pad.Ints[2*i+1]))
		n := lt.dims[c.dn.inSpatial[i]]
		k := kt.dims[c.dn.kSpatial[i]]
		if c.strides[i] < 1 || c.lhsDil[i] < 1 || c.rhsDil[i] < 1 {
			r.fail("strides and dilations must be positive")
			return nil
		}
		dilatedIn := 0
		if n > 0 {
			dilatedIn = (n-1)*c.lhsDil[i] + 1
		}
		padded := c.padLo[i] + dilatedIn + c.padHi[i]
		window := 0
		if k > 0 {
			window = (k-1)*c.rhsDil[i] + 1
		}
		out := 0
		if padded >= window && window > 0 {
			out = (padded-window)/c.strides[i] + 1
		}
		c.inSpatialSizes = append(c.inSpatialSizes, n)
		c.kSizes = append(c.kSizes, k)
		c.outSpatial = append(c.outSpatial, out)
		want[c.dn.outSpatial[i]] = out
	}
	if !slices.Equal(want, ot.dims) {
		r.fail("convolution has shape %v, result %s", want, ot)
		return nil
	}
	return func(in []*Tensor) (*Tensor, error) { return c.run(in[0], in[1], ot.dims), nil }
}

func (c *convolution) run(x, w *Tensor, outDims []int) *Tensor {
	ls, ks, os := rowMajorStrides(x.Dims), rowMajorStrides(w.Dims), rowMajorStrides(outDims)
	out := newTensor(x.DType, outDims)
	ns := len(c.outSpatial)
	perGroup := c.kO / c.groups
	acc := make([]float64, c.kO)
	inPos := make([]int, ns)
	for b := range c.batch {
		forEachIndex(c.outSpatial, func(p []int) {
			clear(acc)
			forEachIndex(c.kSizes, func(k []int) {
				// Input element under window position k, if any.
				lhs := b * ls[c.dn.inBatch]
				for i := range ns {
					q := p[i]*c.strides[i] + k[i]*c.rhsDil[i] - c.padLo[i]
					if q < 0 || q%c.lhsDil[i] != 0 || q/c.lhsDil[i] >= c.inSpatialSizes[i] {
						return // padding or a hole of the lhs dilation
					}
					inPos[i] = q / c.lhsDil[i]
					lhs += inPos[i] * ls[c.dn.inSpatial[i]]
				}
				rhs := 0
				for i := range ns {
					ki := k[i]
					if c.reversal[i] {
						ki = c.kSizes[i] - 1 - ki
					}
					rhs += ki * ks[c.dn.kSpatial[i]]
				}
				for g := range c.groups {
					for i := range c.kIn {
						v := x.F32[lhs+(g*c.kIn+i)*ls[c.dn.inFeature]]
						xv := float64(v)
						row := rhs + i*ks[c.dn.kIn]
						for o := g * perGroup; o < (g+1)*perGroup; o++ {
							acc[o] += xv * float64(w.F32[row+o*ks[c.dn.kOut]])
						}
					}
				}
			})
			base := b * os[c.dn.outBatch]
			for i := range ns {
				base += p[i] * os[c.dn.outSpatial[i]]
			}
			for o, v := range acc {
				out.F32[base+o*os[c.dn.outFeature]] = float32(v)
			}
		})
	}
	out.roundToType()
	return out
}
