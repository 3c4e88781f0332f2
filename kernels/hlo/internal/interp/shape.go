package interp

import (
	"slices"
)

// Data movement ops are written as "which source element goes to each
// result element": they compute a list of flat source indices and
// gatherFlat copies along it, whatever the dtype.

// rowMajorStrides are the flat-index strides of dims.
func rowMajorStrides(dims []int) []int {
	st := make([]int, len(dims))
	s := 1
	for i := len(dims) - 1; i >= 0; i-- {
		st[i] = s
		s *= dims[i]
	}
	return st
}

// forEachIndex calls fn with every multi-index of dims in row-major order
// (fn must not keep the slice).
func forEachIndex(dims []int, fn func(ix []int)) {
	n := numElements(dims)
	ix := make([]int, len(dims))
	for range n {
		fn(ix)
		for a := len(dims) - 1; a >= 0; a-- {
			if ix[a]++; ix[a] < dims[a] {
				break
			}
			ix[a] = 0
		}
	}
}

// stridedIndex lists, for each multi-index ix of dims in row-major
// order, base + Σ ix[k]·strides[k].
func stridedIndex(dims, strides []int, base int) []int {
	out := make([]int, 0, numElements(dims))
	pos := base
	ix := make([]int, len(dims))
	for range numElements(dims) {
		out = append(out, pos)
		for a := len(dims) - 1; a >= 0; a-- {
			ix[a]++
			pos += strides[a]
			if ix[a] < dims[a] {
				break
			}
			pos -= strides[a] * dims[a]
			ix[a] = 0
		}
	}
	return out
}

// gatherFlat makes a tensor of dims whose element k is element idx[k] of
// the sources' data laid end to end (all sources share one dtype).
func gatherFlat(dims []int, idx []int, srcs ...*Tensor) *Tensor {
	src := srcs[0]
	if len(srcs) > 1 {
		all := &Tensor{DType: src.DType}
		for _, s := range srcs {
			all.F32 = append(all.F32, s.F32...)
			all.Ints = append(all.Ints, s.Ints...)
			all.Bools = append(all.Bools, s.Bools...)
		}
		src = all
	}
	out := newTensor(src.DType, dims)
	switch {
	case src.DType.IsFloat():
		for k, i := range idx {
			out.F32[k] = src.F32[i]
		}
	case src.DType.IsInt():
		for k, i := range idx {
			out.Ints[k] = src.Ints[i]
		}
	default:
		for k, i := range idx {
			out.Bools[k] = src.Bools[i]
		}
	}
	return out
}

func buildConstant(s *stmt, r *attrReader) evalFunc {
	r.operands(0)
	v := r.dense("value")
	if r.err == nil && !v.typ().equal(s.outType) {
		r.fail("value is %s, result %s", v.typ(), s.outType)
	}
	return func([]*Tensor) (*Tensor, error) { return v, nil }
}

// buildIota: element ix holds ix[iota_dimension].
func buildIota(s *stmt, r *attrReader) evalFunc {
	r.operands(0)
	dim := r.int("iota_dimension")
	dims := s.outType.dims
	if dim < 0 || dim >= len(dims) {
		r.fail("iota_dimension %d out of range for %s", dim, s.outType)
	}
	if s.outType.dtype == I1 {
		r.fail("unsupported on i1")
	}
	return func([]*Tensor) (*Tensor, error) {
		out := newTensor(s.outType.dtype, dims)
		k := 0
		forEachIndex(dims, func(ix []int) {
			if out.DType.IsFloat() {
				out.F32[k] = float32(ix[dim])
			} else {
				out.Ints[k] = int64(ix[dim])
			}
			k++
		})
		out.roundToType()
		return out, nil
	}
}

// buildReshape keeps the row-major element order.
func buildReshape(s *stmt, r *attrReader) evalFunc {
	if !r.operands(1) {
		return nil
	}
	if in := s.inTypes[0]; in.dtype != s.outType.dtype || numElements(in.dims) != numElements(s.outType.dims) {
		r.fail("cannot reshape %s to %s", in, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) {
		out := *in[0]
		out.Dims = slices.Clone(s.outType.dims)
		return &out, nil
	}
}

// buildTranspose: result axis k is operand axis permutation[k].
func buildTranspose(s *stmt, r *attrReader) evalFunc {
	if !r.operands(1) {
		return nil
	}
	perm := r.ints("permutation")
	in := s.inTypes[0]
	sorted := slices.Sorted(slices.Values(perm))
	for i, p := range sorted {
		if p != i || len(perm) != len(in.dims) {
			r.fail("permutation %v is not a permutation of %d axes", perm, len(in.dims))
			return nil
		}
	}
	dims := make([]int, len(perm))
	for k, p := range perm {
		dims[k] = in.dims[p]
	}
	if !slices.Equal(dims, s.outType.dims) || in.dtype != s.outType.dtype {
		r.fail("transposing %s gives %v, result %s", in, dims, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) { return permuted(in[0], perm), nil }
}

// buildBroadcastInDim: operand axis d becomes result axis
// broadcast_dimensions[d]; an operand axis of size 1 is repeated.
func buildBroadcastInDim(s *stmt, r *attrReader) evalFunc {
	if !r.operands(1) {
		return nil
	}
	bd := r.ints("broadcast_dimensions")
	in, out := s.inTypes[0], s.outType
	if len(bd) != len(in.dims) || in.dtype != out.dtype {
		r.fail("broadcast_dimensions %v do not fit %s -> %s", bd, in, out)
		return nil
	}
	for d, a := range bd {
		if a < 0 || a >= len(out.dims) || in.dims[d] != 1 && in.dims[d] != out.dims[a] {
			r.fail("operand axis %d (size %d) cannot go to result axis %d of %s", d, in.dims[d], a, out)
		}
	}
	return func(in []*Tensor) (*Tensor, error) {
		x := in[0]
		st := rowMajorStrides(x.Dims)
		strides := make([]int, len(out.dims)) // 0 on new and repeated axes
		for d, a := range bd {
			if x.Dims[d] != 1 {
				strides[a] = st[d]
			}
		}
		return gatherFlat(out.dims, stridedIndex(out.dims, strides, 0), x), nil
	}
}

// buildConcatenate joins operands along dimension.
func buildConcatenate(s *stmt, r *attrReader) evalFunc {
	dim := r.int("dimension")
	if len(s.operands) == 0 || dim < 0 || dim >= len(s.outType.dims) {
		r.fail("bad dimension %d for %s", dim, s.outType)
		return nil
	}
	total := 0
	for _, t := range s.inTypes {
		if t.dtype != s.outType.dtype || len(t.dims) != len(s.outType.dims) ||
			!slices.Equal(t.dims[:dim], s.outType.dims[:dim]) || !slices.Equal(t.dims[dim+1:], s.outType.dims[dim+1:]) {
			r.fail("operand %s does not fit %s along dimension %d", t, s.outType, dim)
			return nil
		}
		total += t.dims[dim]
	}
	if total != s.outType.dims[dim] {
		r.fail("operands sum to %d along %d, result has %d", total, dim, s.outType.dims[dim])
	}
	return func(in []*Tensor) (*Tensor, error) {
		// The result is, for each index of the axes before dim, each
		// operand's block of (its size along dim)·(inner) elements in turn.
		outer := numElements(s.outType.dims[:dim])
		inner := numElements(s.outType.dims[dim+1:])
		idx := make([]int, 0, numElements(s.outType.dims))
		for o := range outer {
			base := 0
			for _, t := range in {
				n := t.Dims[dim] * inner
				for k := range n {
					idx = append(idx, base+o*n+k)
				}
				base += t.Size()
			}
		}
		return gatherFlat(s.outType.dims, idx, in...), nil
	}
}

// buildSlice takes start_indices:limit_indices:strides on every axis.
func buildSlice(s *stmt, r *attrReader) evalFunc {
	if !r.operands(1) {
		return nil
	}
	start, limit, step := r.ints("start_indices"), r.ints("limit_indices"), r.ints("strides")
	in := s.inTypes[0]
	dims := make([]int, len(in.dims))
	if len(start) != len(dims) || len(limit) != len(dims) || len(step) != len(dims) {
		r.fail("slice attributes do not have rank %d", len(dims))
		return nil
	}
	for k := range dims {
		if start[k] < 0 || limit[k] > in.dims[k] || start[k] > limit[k] || step[k] < 1 {
			r.fail("bad slice %d:%d:%d of axis %d (size %d)", start[k], limit[k], step[k], k, in.dims[k])
			return nil
		}
		dims[k] = (limit[k] - start[k] + step[k] - 1) / step[k]
	}
	if !slices.Equal(dims, s.outType.dims) {
		r.fail("slice has shape %v, result %s", dims, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) {
		st := rowMajorStrides(in[0].Dims)
		strides, base := make([]int, len(dims)), 0
		for k := range dims {
			strides[k] = st[k] * step[k]
			base += st[k] * start[k]
		}
		return gatherFlat(dims, stridedIndex(dims, strides, base), in[0]), nil
	}
}

// buildPad: operand element i goes to edge_padding_low + i·(interior+1)
// on each axis (negative low/high padding crops); the rest is the fill
// value.
func buildPad(s *stmt, r *attrReader) evalFunc {
	if !r.operands(2) {
		return nil
	}
	lo, hi, interior := r.ints("edge_padding_low"), r.ints("edge_padding_high"), r.ints("interior_padding")
	in := s.inTypes[0]
	rank := len(in.dims)
	if len(lo) != rank || len(hi) != rank || len(interior) != rank || len(s.inTypes[1].dims) != 0 {
		r.fail("padding attributes do not have rank %d, or the fill is not a scalar", rank)
		return nil
	}
	dims := make([]int, rank)
	for k, d := range in.dims {
		if interior[k] < 0 {
			r.fail("negative interior padding")
		}
		dims[k] = lo[k] + hi[k] + d + max(d-1, 0)*interior[k]
	}
	if !slices.Equal(dims, s.outType.dims) {
		r.fail("padded shape %v, result %s", dims, s.outType)
	}
	return func(in []*Tensor) (*Tensor, error) {
		x := in[0]
		fill := x.Size() // index of the fill value after x's data
		st := rowMajorStrides(x.Dims)
		idx := make([]int, 0, numElements(dims))
		forEachIndex(dims, func(ix []int) {
			src := 0
			for k, p := range ix {
				q := p - lo[k]
				if q < 0 || q%(interior[k]+1) != 0 || q/(interior[k]+1) >= x.Dims[k] {
					src = fill
					break
				}
				src += q / (interior[k] + 1) * st[k]
			}
			idx = append(idx, src)
		})
		return gatherFlat(dims, idx, x, in[1]), nil
	}
}

// buildGather implements the spec's gather without batching dimensions:
// for each result index, the axes not in offset_dims (the batch axes)
// pick a start index vector from start_indices (along index_vector_dim);
// start_index_map says which operand axis each component starts, clamped
// so the slice stays inside the operand; offset_dims walk the slice,
// whose collapsed_slice_dims (size 1) do not appear in the result.
func buildGather(s *stmt, r *attrReader) evalFunc {
	if !r.operands(2) {
		return nil
	}
	f := r.fields("dimension_numbers", "stablehlo.gather", "offset_dims", "collapsed_slice_dims",
		"operand_batching_dims", "start_indices_batching_dims", "start_index_map", "index_vector_dim")
	sizes := r.ints("slice_sizes")
	r.bool("indices_are_sorted") // a promise that only allows faster code
	if len(f["operand_batching_dims"]) > 0 || len(f["start_indices_batching_dims"]) > 0 {
		r.fail("operand_batching_dims / start_indices_batching_dims are not supported")
	}
	if len(f["index_vector_dim"]) != 1 {
		r.fail("missing index_vector_dim")
	}
	if r.err != nil {
		return nil
	}
	offsetDims, collapsed, startMap, ivd := f["offset_dims"], f["collapsed_slice_dims"], f["start_index_map"], f["index_vector_dim"][0]
	op, ind, out := s.inTypes[0], s.inTypes[1], s.outType
	if !ind.dtype.IsInt() || op.dtype != out.dtype || len(sizes) != len(op.dims) || ivd < 0 || ivd > len(ind.dims) {
		r.fail("operand %s, indices %s, slice_sizes %v, index_vector_dim %d do not fit", op, ind, sizes, ivd)
		return nil
	}
	// The index vector has one component per start_index_map entry; with
	// index_vector_dim == rank(indices) it is an implicit trailing axis
	// of size 1.
	vecLen := 1
	if ivd < len(ind.dims) {
		vecLen = ind.dims[ivd]
	}
	if vecLen != len(startMap) {
		r.fail("index vectors have %d components, start_index_map %v", vecLen, startMap)
	}
	// Result shape: batch axes are the indices' axes but index_vector_dim;
	// offset axes are the slice's axes but the collapsed ones.
	var sliceAxes []int // operand axes the offset dims walk, in order
	for d := range op.dims {
		if sizes[d] < 0 || sizes[d] > op.dims[d] {
			r.fail("slice_sizes %v do not fit %s", sizes, op)
		}
		if slices.Contains(collapsed, d) {
			if sizes[d] != 1 {
				r.fail("collapsed axis %d has slice size %d", d, sizes[d])
			}
			continue
		}
		sliceAxes = append(sliceAxes, d)
	}
	if len(sliceAxes) != len(offsetDims) {
		r.fail("offset_dims %v do not match the %d uncollapsed slice axes", offsetDims, len(sliceAxes))
	}
	var batchIndexDims []int
	for d, n := range ind.dims {
		if d != ivd {
			batchIndexDims = append(batchIndexDims, n)
		}
	}
	dims := make([]int, len(batchIndexDims)+len(offsetDims))
	var batchAxes []int // result axes that are batch axes
	b, o := 0, 0
	for a := range dims {
		if slices.Contains(offsetDims, a) {
			dims[a] = sizes[sliceAxes[o]]
			o++
		} else if b < len(batchIndexDims) {
			dims[a] = batchIndexDims[b]
			batchAxes = append(batchAxes, a)
			b++
		}
	}
	if r.err != nil {
		return nil
	}
	if !slices.Equal(dims, out.dims) {
		r.fail("gather has shape %v, result %s", dims, out)
		return nil
	}
	return func(in []*Tensor) (*Tensor, error) {
		x, indices := in[0], in[1]
		opStrides, indStrides := rowMajorStrides(x.Dims), rowMajorStrides(indices.Dims)
		idx := make([]int, 0, numElements(dims))
		forEachIndex(dims, func(ix []int) {
			// Flat position of the index vector in start_indices.
			vec := 0
			k := 0
			for d := range indices.Dims {
				if d == ivd {
					continue
				}
				vec += ix[batchAxes[k]] * indStrides[d]
				k++
			}
			vecStride := 0
			if ivd < len(indices.Dims) {
				vecStride = indStrides[ivd]
			}
			src := 0
			for c, d := range startMap {
				start := int(indices.Ints[vec+c*vecStride])
				start = min(max(start, 0), x.Dims[d]-sizes[d])
				src += start * opStrides[d]
			}
			for j, d := range sliceAxes {
				src += ix[offsetDims[j]] * opStrides[d]
			}
			idx = append(idx, src)
		})
		return gatherFlat(dims, idx, x), nil
	}
}
