package nn

import (
	"fmt"
	"math"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
	gnn "github.com/gomlx/gomlx/ml/nn"
)

// Linear applies a PyTorch Linear (weight [out, in], optional bias) to the
// last axis of x.
func Linear(s Scope, x *Node) *Node {
	w := s.Weight("weight", InOut)
	dims := x.Shape().Dimensions
	in := dims[len(dims)-1]
	if w.Shape().Dimensions[0] != in {
		panic(fmt.Errorf("%s: input has %d features, weight expects %d", s.Name("weight"), in, w.Shape().Dimensions[0]))
	}
	out := w.Shape().Dimensions[1]
	outDims := append(append([]int(nil), dims[:len(dims)-1]...), out)
	loras := s.loras("weight", InOut)
	stored := widenedInPieces(s.Lowering(), w)
	if stored == nil && len(loras) == 0 {
		// Contracting x's last axis in place: flattening x first would
		// copy it whenever another op still reads it (gobackend reshapes
		// only an input it owns in place), as q, k and v read one input.
		y := DotGeneral(x, []int{len(dims) - 1}, nil, w, []int{0}, nil)
		if s.Has("bias") {
			y = Add(y, ExpandLeftToRank(s.Weight("bias", AsStored), y.Rank()))
		}
		return y
	}
	x2 := Reshape(x, -1, in)
	var y *Node
	if stored != nil {
		y = matMulWidenedPieces(x2, stored, widenPieceBytes)
	} else {
		y = MatMul(x2, w)
	}
	for _, l := range loras {
		y = Add(y, MulScalar(MatMul(MatMul(x2, l.down), l.up), l.scale))
	}
	y = Reshape(y, outDims...)
	if s.Has("bias") {
		y = Add(y, ExpandLeftToRank(s.Weight("bias", AsStored), y.Rank()))
	}
	return y
}

// Padding is [top, bottom, left, right] in pixels.
type Padding [4]int

// Same is the symmetric padding that keeps size for an odd kernel at stride 1.
func Same(kernel int) Padding {
	p := kernel / 2
	return Padding{p, p, p, p}
}

// Conv2D applies a PyTorch Conv2d (weight [out, in, kh, kw], bias [out]) to
// NHWC x. The kernel size comes from the checkpoint; the caller gives stride
// and padding because they are architecture, not weights.
func Conv2D(s Scope, x *Node, stride int, pad Padding) *Node {
	kernel := s.Weight("weight", HWIO) // [kh, kw, in, out]
	xd := x.Shape().Dimensions
	if cin := kernel.Shape().Dimensions[2]; len(xd) != 4 || xd[3] != cin {
		panic(fmt.Errorf("%s: input %v is not NHWC with %d channels", s.Name("weight"), xd, cin))
	}
	y := conv(s.Lowering(), x, kernel, stride, pad)
	for _, l := range s.loras("weight", HWIO) {
		if ld := l.down.Shape().Dimensions; ld[2] != xd[3] {
			panic(fmt.Errorf("%s: LoRA down kernel %v does not take %d channels", s.Name("weight"), ld, xd[3]))
		}
		h := conv(s.Lowering(), x, l.down, stride, pad) // [n, ho, wo, r]
		hd := h.Shape().Dimensions
		up := Reshape(MatMul(Reshape(h, -1, hd[3]), l.up), hd[0], hd[1], hd[2], -1)
		y = Add(y, MulScalar(up, l.scale))
	}
	if s.Has("bias") {
		y = Add(y, ExpandLeftToRank(s.Weight("bias", AsStored), y.Rank()))
	}
	return y
}

// conv is a 2-D convolution of NHWC x with an HWIO kernel in the
// lowering's form.
func conv(lowering Lowering, x, kernel *Node, stride int, pad Padding) *Node {
	kd := kernel.Shape().Dimensions
	kh, kw, cin, cout := kd[0], kd[1], kd[2], kd[3]
	xd := x.Shape().Dimensions
	stored := widenedInPieces(lowering, kernel)
	var y *Node
	switch {
	case kh == 1 && kw == 1 && stride == 1 && pad == (Padding{}) && stored != nil:
		y = Reshape(matMulWidenedPieces(Reshape(x, -1, cin), stored, widenPieceBytes), xd[0], xd[1], xd[2], cout)
	case kh == 1 && kw == 1 && stride == 1 && pad == (Padding{}):
		// x's channels contracted in place: a resnet's shortcut reads x
		// before its main branch does, and flattening x would copy it.
		y = Reshape(DotGeneral(x, []int{3}, nil, kernel, []int{2}, nil), xd[0], xd[1], xd[2], cout)
	case lowering == LowerGo && stored != nil:
		y = im2colConvWidenedPieces(x, stored, stride, pad, im2colChunkBytes, widenPieceBytes)
	case lowering == LowerGo:
		y = im2colConv(x, kernel, stride, pad)
	default:
		y = ConvGeneral(x, kernel, compute.ConvolveAxesConfig{
			InputBatch: 0, InputChannels: 3, InputSpatial: []int{1, 2},
			KernelInputChannels: 2, KernelOutputChannels: 3, KernelSpatial: []int{0, 1},
			OutputBatch: 0, OutputChannels: 3, OutputSpatial: []int{1, 2},
		}, []int{stride, stride}, [][2]int{{pad[0], pad[1]}, {pad[2], pad[3]}}, nil, nil, 1, 1)
	}
	return y
}

// im2colChunkBytes bounds the patch matrix of one im2col step: the VAE
// decoder's full-resolution convolutions (512×512×128, 3×3) would otherwise
// build 1.2 GB of patches at once. A block's taps and patches live together
// (twice the block), so blocks stay small: at 32 MiB the SD1.5 decoder's
// peak at 256×256 is 190 MiB instead of 371 MiB at 128 MiB, at the same
// speed (the matmuls still have thousands of rows).
const im2colChunkBytes = 32 << 20

// im2colConv gathers every kernel tap as a shifted (strided) view of the
// padded input, concatenates them along channels and does one matmul: the Go
// backend's direct convolution is two orders of magnitude slower. Large
// inputs are done in blocks of output rows, which bounds the patch memory.
func im2colConv(x, kernel *Node, stride int, pad Padding) *Node {
	return im2colConvBlocks(x, kernel, stride, pad, im2colChunkBytes)
}

func im2colConvBlocks(x, kernel *Node, stride int, pad Padding, chunkBytes int) *Node {
	kd := kernel.Shape().Dimensions
	kh, kw, cin, cout := kd[0], kd[1], kd[2], kd[3]
	x, n, ho, wo, rows := im2colLayout(x, kh, kw, cin, stride, pad, chunkBytes)
	flat := Reshape(kernel, kh*kw*cin, cout)
	var blocks []*Node
	for y0 := 0; y0 < ho; y0 += rows {
		y1 := min(ho, y0+rows)
		var cols []*Node
		for dy := 0; dy < kh; dy++ {
			cols = append(cols, taps(x, y0*stride, y1-y0, stride, wo, dy, 0, kw)...)
		}
		y := MatMul(patchMatrix(cols), flat)
		blocks = append(blocks, Reshape(y, n, y1-y0, wo, cout))
	}
	if len(blocks) == 1 {
		return blocks[0]
	}
	return Concatenate(blocks, 1)
}

// im2colLayout pads NHWC x for a kh×kw convolution and returns it with
// the batch, the output height and width, and the output rows per block.
func im2colLayout(x *Node, kh, kw, cin, stride int, pad Padding, chunkBytes int) (xp *Node, n, ho, wo, rows int) {
	xp = padNHWC(x, pad[0], pad[1], pad[2], pad[3])
	d := xp.Shape().Dimensions
	n, ho, wo = d[0], (d[1]-kh)/stride+1, (d[2]-kw)/stride+1
	return xp, n, ho, wo, rowsPerBlock(n, wo, kh*kw*cin, ho, chunkBytes)
}

// padNHWC zero-pads the spatial axes of NHWC x.
func padNHWC(x *Node, top, bottom, left, right int) *Node {
	if top == 0 && bottom == 0 && left == 0 && right == 0 {
		return x
	}
	return Pad(x, ScalarZero(x.Graph(), x.DType()),
		compute.PadAxis{}, compute.PadAxis{Start: top, End: bottom},
		compute.PadAxis{Start: left, End: right}, compute.PadAxis{})
}

// rowsPerBlock is how many output rows of an im2col convolution go in one
// block: all of them when their patches (patchCols float32 columns per
// output pixel) fit in chunkBytes.
func rowsPerBlock(n, wo, patchCols, ho, chunkBytes int) int {
	rowBytes := n * wo * patchCols * 4
	if rowBytes*ho <= chunkBytes {
		return ho
	}
	return max(1, chunkBytes/rowBytes)
}

// taps returns the strided views of padded NHWC xp that kernel taps (dy,
// dx), dx in [dx0, dx1), read for rows output rows of wo columns, the
// first reading padded row row0+dy.
func taps(xp *Node, row0, rows, stride, wo, dy, dx0, dx1 int) []*Node {
	cols := make([]*Node, 0, dx1-dx0)
	for dx := dx0; dx < dx1; dx++ {
		cols = append(cols, Slice(xp, AxisRange(),
			AxisRange(row0+dy, row0+(rows-1)*stride+dy+1).Stride(stride),
			AxisRange(dx, dx+(wo-1)*stride+1).Stride(stride),
			AxisRange()))
	}
	return cols
}

// patchMatrix concatenates taps on channels into the [pixels, taps·c]
// matrix an HWIO kernel's rows multiply.
func patchMatrix(cols []*Node) *Node {
	p := cols[0]
	if len(cols) > 1 {
		p = Concatenate(cols, -1)
	}
	d := p.Shape().Dimensions
	return Reshape(p, d[0]*d[1]*d[2], d[3])
}

// widenPieceBytes bounds the float32 copy of an fp16 weight that one
// matmul widens at a time on the Go backend. Whole, SD1.5's large weights
// are widened into buffers of many sizes (up to 118 MB for a 2560→1280 3×3
// conv), and gobackend keeps every freed buffer in a pool per size until
// two collections pass: at the end of a 256² fp16 step half a GiB of them
// was reachable. Pieces of one bounded size reuse a few buffers instead.
const widenPieceBytes = 16 << 20

// widenedInGraph returns the stored half-precision parameter behind a
// weight the graph widens to float32 on the Go backend, or nil (a float32
// weight, or XLA, which fuses the conversion into its consumer).
func widenedInGraph(lowering Lowering, w *Node) *Node {
	if lowering != LowerGo || w.Type() != NodeTypeConvertDType {
		return nil
	}
	if p := w.Inputs()[0]; p.Type() == NodeTypeParameter && p.DType().IsHalfPrecision() {
		return p
	}
	return nil
}

// widenedInPieces is widenedInGraph for a weight whose float32 copy is
// larger than widenPieceBytes, the ones matmuls widen in pieces; nil for
// every other weight.
func widenedInPieces(lowering Lowering, w *Node) *Node {
	if w.Shape().Size()*4 <= widenPieceBytes {
		return nil
	}
	return widenedInGraph(lowering, w)
}

// pieces splits n items into equal runs of at most size each (the last
// may be shorter) and returns the run length: equal runs keep the widened
// pieces in one buffer size.
func pieces(n, size int) int {
	size = max(1, min(n, size))
	count := (n + size - 1) / size
	return (n + count - 1) / count
}

// matMulWidenedPieces is x [M, K] · stored [..., K, N] (leading axes of
// size 1) with stored widened a block of rows (≤ pieceBytes as float32) at
// a time: the sum of x[:, rows] · float32(stored[rows]).
func matMulWidenedPieces(x, stored *Node, pieceBytes int) *Node {
	sd := stored.Shape().Dimensions
	k, n := sd[len(sd)-2], sd[len(sd)-1]
	rows := pieces(k, pieceBytes/(n*4))
	var y *Node
	for k0 := 0; k0 < k; k0 += rows {
		k1 := min(k, k0+rows)
		// Slice before reshaping: reshaping a parameter copies it whole.
		spec := make([]SliceAxisSpec, len(sd))
		for i := range spec {
			spec[i] = AxisRange()
		}
		spec[len(sd)-2] = AxisRange(k0, k1)
		piece := ConvertDType(Reshape(Slice(stored, spec...), k1-k0, n), x.DType())
		part := MatMul(Slice(x, AxisRange(), AxisRange(k0, k1)), piece)
		if y == nil {
			y = part
		} else {
			y = Add(y, part)
		}
	}
	return y
}

// im2colConvWidenedPieces is im2colConvBlocks for a half-precision HWIO
// kernel larger than widenPieceBytes in float32: each run of taps along a
// kernel row is widened once and multiplied with those taps of every row
// block, and the partial products are summed per block.
func im2colConvWidenedPieces(x, stored *Node, stride int, pad Padding, chunkBytes, pieceBytes int) *Node {
	kd := stored.Shape().Dimensions
	kh, kw, cin, cout := kd[0], kd[1], kd[2], kd[3]
	x, n, ho, wo, rows := im2colLayout(x, kh, kw, cin, stride, pad, chunkBytes)
	run := pieces(kw, pieceBytes/(cin*cout*4))
	var blocks []*Node
	for dy := 0; dy < kh; dy++ {
		for dx0 := 0; dx0 < kw; dx0 += run {
			dx1 := min(kw, dx0+run)
			piece := Slice(stored, AxisRange(dy, dy+1), AxisRange(dx0, dx1), AxisRange(), AxisRange())
			piece = ConvertDType(Reshape(piece, (dx1-dx0)*cin, cout), x.DType())
			for b, y0 := 0, 0; y0 < ho; b, y0 = b+1, y0+rows {
				part := MatMul(patchMatrix(taps(x, y0*stride, min(ho, y0+rows)-y0, stride, wo, dy, dx0, dx1)), piece)
				if b == len(blocks) {
					blocks = append(blocks, part)
				} else {
					blocks[b] = Add(blocks[b], part)
				}
			}
		}
	}
	for b, y0 := 0, 0; y0 < ho; b, y0 = b+1, y0+rows {
		blocks[b] = Reshape(blocks[b], n, min(ho, y0+rows)-y0, wo, cout)
	}
	if len(blocks) == 1 {
		return blocks[0]
	}
	return Concatenate(blocks, 1)
}

// GroupNorm is PyTorch's GroupNorm over NHWC x with affine weight and bias.
func GroupNorm(s Scope, x *Node, groups int, eps float64) *Node {
	d := x.Shape().Dimensions
	n, h, w, c := d[0], d[1], d[2], d[3]
	if c%groups != 0 {
		panic(fmt.Errorf("%s: %d channels do not split into %d groups", s.Name("weight"), c, groups))
	}
	g := Reshape(x, n, h*w, groups, c/groups)
	g = gnn.LayerNorm(g, []int{1, 3}, eps, nil, nil, nil)
	y := Reshape(g, n, h, w, c)
	gamma := ExpandLeftToRank(s.Weight("weight", AsStored), 4)
	beta := ExpandLeftToRank(s.Weight("bias", AsStored), 4)
	return Add(Mul(y, gamma), beta)
}

// Blocked says what NormActConv and UpsampleConv do besides the
// convolution when they run in row blocks. The zero value adds nothing and
// returns float32.
type Blocked struct {
	// Residual, when set, returns rows [r0, r1) (in float32) of a tensor
	// of the output's shape that is added to it: a resnet's shortcut, added
	// a block at a time so that neither it nor the sum exists whole before
	// the output. Unblocked, Residual(0, height) is built before the
	// convolution (it usually reads the wider input, which can then be
	// freed) and added after.
	Residual func(r0, r1 int) *Node
	// Store is the dtype blocks are kept in once computed (float32 when
	// zero). Float16 halves the full-resolution activations between
	// blocks, as diffusers' fp16 pipeline keeps them; compute stays float32
	// and inputs are widened a block at a time. Unblocked, the output is
	// float32 whatever Store says.
	Store dtypes.DType
}

// F32 returns x as float32, converting it when it is stored narrower.
func F32(x *Node) *Node {
	if x.DType() == dtypes.Float32 {
		return x
	}
	return ConvertDType(x, dtypes.Float32)
}

// Rows returns rows [r0, r1) of NHWC x as float32 (x itself, widened if
// stored narrower, for all of them): what a Blocked.Residual returns for
// an identity shortcut.
func Rows(x *Node, r0, r1 int) *Node {
	if r0 == 0 && r1 == x.Shape().Dimensions[1] {
		return F32(x)
	}
	return F32(Slice(x, AxisRange(), AxisRange(r0, r1), AxisRange(), AxisRange()))
}

// NormActConv is Conv2D(conv, act(GroupNorm(norm, x))), the opening of
// every resnet half, plus opt.Residual. On the Go backend, when the
// convolution's im2col runs in row blocks, each block of rows is
// normalized, activated and padded just before its patches are gathered,
// from group statistics taken over the whole input first (one pass over
// blocks, see normActConvBlocks): the normalized, activated and padded
// copies of x, each as large as x, never exist. At 512×512 that is three
// 256 MiB tensors in the VAE decoder's last blocks. x may be stored as
// float16 (Blocked.Store). The result is the composition's up to float32
// rounding (and the rounding of Store).
func NormActConv(norm Scope, x *Node, groups int, eps float64, act func(*Node) *Node, conv Scope, stride int, pad Padding, opt Blocked) *Node {
	if y := normActConvBlocks(norm, x, groups, eps, act, conv, stride, pad, opt, im2colChunkBytes); y != nil {
		return y
	}
	var residual *Node
	if opt.Residual != nil {
		// The output's rows; the kernel's height comes from the checkpoint
		// (Conv2D reports a kernel that is not 4-D).
		kh := 1
		if ks := conv.StoredShape("weight"); len(ks) == 4 {
			kh = ks[2]
		}
		residual = opt.Residual(0, (x.Shape().Dimensions[1]+pad[0]+pad[1]-kh)/stride+1)
	}
	y := Conv2D(conv, act(GroupNorm(norm, F32(x), groups, eps)), stride, pad)
	if residual != nil {
		y = Add(residual, y)
	}
	return y
}

// UpsampleConv is Conv2D(conv, UpsampleNearest2x(x)) with a 3×3 "same"
// convolution, diffusers' Upsample2D, plus opt.Residual. Where the
// convolution runs in row blocks on the Go backend, each block upsamples
// only the input rows it reads: the upsampled and padded copies (4× and
// more than 4× x) never exist. x may be stored as float16.
func UpsampleConv(conv Scope, x *Node, opt Blocked) *Node {
	if y := upsampleConvBlocks(conv, x, opt, im2colChunkBytes); y != nil {
		return y
	}
	var residual *Node
	if opt.Residual != nil {
		residual = opt.Residual(0, 2*x.Shape().Dimensions[1])
	}
	y := Conv2D(conv, UpsampleNearest2x(F32(x)), 1, Same(3))
	if residual != nil {
		y = Add(residual, y)
	}
	return y
}

// upsampleConvBlocks is UpsampleConv's blocked form, or nil where it does
// not apply (see convBlocks).
func upsampleConvBlocks(conv Scope, x *Node, opt Blocked, chunkBytes int) *Node {
	xd := x.Shape().Dimensions
	if len(xd) != 4 {
		return nil
	}
	n, hs, ws, c := xd[0], xd[1], xd[2], xd[3]
	rows := func(r0, r1 int) *Node {
		s0, s1 := r0/2, (r1+1)/2
		up := UpsampleNearest2x(Rows(x, s0, s1))
		if r0 == 2*s0 && r1 == 2*s1 {
			return up
		}
		return Slice(up, AxisRange(), AxisRange(r0-2*s0, r1-2*s0), AxisRange(), AxisRange())
	}
	return convBlocks(conv, rows, n, 2*hs, 2*ws, c, 1, Same(3), opt, chunkBytes)
}

// normActConvBlocks is NormActConv's blocked form, or nil where it does not
// apply (see convBlocks).
func normActConvBlocks(norm Scope, x *Node, groups int, eps float64, act func(*Node) *Node, conv Scope, stride int, pad Padding, opt Blocked, chunkBytes int) *Node {
	xd := x.Shape().Dimensions
	if len(xd) != 4 {
		return nil
	}
	n, h, w, c := xd[0], xd[1], xd[2], xd[3]
	if !blocked(conv, n, h, w, c, stride, pad, chunkBytes) {
		return nil
	}
	if c%groups != 0 {
		panic(fmt.Errorf("%s: %d channels do not split into %d groups", norm.Name("weight"), c, groups))
	}
	// Group statistics (per sample and group: the mean and the mean
	// squared deviation from it) in one pass over blocks of rows: each
	// block's own mean and squared deviations, merged as Chan et al.'s
	// parallel variance does, which is as stable as two passes. Two passes
	// would widen an fp16 x twice, and gobackend merges identical ops, so
	// the first pass's widened blocks would all wait for the second: a
	// float32 copy of x after all.
	cg := c / groups
	perChannel := func(g *Node) *Node { // [n, groups] → [n, 1, 1, c]
		return Reshape(BroadcastToDims(Reshape(g, n, groups, 1), n, groups, cg), n, 1, 1, c)
	}
	groupSum := func(perC *Node) *Node { // [n, c] → [n, groups]
		return ReduceSum(Reshape(perC, n, groups, cg), 2)
	}
	statRows := max(1, chunkBytes/(n*w*c*4))
	var mean, m2 *Node
	var count float64
	for r0 := 0; r0 < h; r0 += statRows {
		r1 := min(h, r0+statRows)
		nb := float64((r1 - r0) * w * cg)
		xb := Rows(x, r0, r1)
		mb := DivScalar(groupSum(ReduceSum(xb, 1, 2)), nb)
		m2b := groupSum(ReduceSum(Square(Sub(xb, perChannel(mb))), 1, 2))
		if mean == nil {
			mean, m2, count = mb, m2b, nb
			continue
		}
		total := count + nb
		delta := Sub(mb, mean)
		mean = Add(mean, MulScalar(delta, nb/total))
		m2 = Add(Add(m2, m2b), MulScalar(Square(delta), count*nb/total))
		count = total
	}
	rstd := perChannel(Rsqrt(AddScalar(DivScalar(m2, count), eps)))
	mean = perChannel(mean)
	gamma := ExpandLeftToRank(norm.Weight("weight", AsStored), 4)
	beta := ExpandLeftToRank(norm.Weight("bias", AsStored), 4)
	rows := func(r0, r1 int) *Node {
		return act(Add(Mul(Mul(Sub(Rows(x, r0, r1), mean), rstd), gamma), beta))
	}
	return convBlocks(conv, rows, n, h, w, c, stride, pad, opt, chunkBytes)
}

// blocked reports whether conv over an [n, h, w, c] input runs in row
// blocks of at most chunkBytes of patches in convBlocks: on the Go backend,
// for a kernel larger than 1×1 whose patches exceed one block, with no
// unmerged LoRA on it and no fp16 kernel widened in pieces (those are the
// deep, low-resolution blocks, whose convolutions are one block anyway).
func blocked(conv Scope, n, h, w, c, stride int, pad Padding, chunkBytes int) bool {
	if conv.Lowering() != LowerGo || conv.hasLoRA("weight") {
		return false
	}
	ks := conv.StoredShape("weight") // [out, in, kh, kw]
	if len(ks) != 4 {
		return false
	}
	cout, cin, kh, kw := ks[0], ks[1], ks[2], ks[3]
	if c != cin {
		panic(fmt.Errorf("%s: input has %d channels, weight expects %d", conv.Name("weight"), c, cin))
	}
	ho := (h+pad[0]+pad[1]-kh)/stride + 1
	wo := (w+pad[2]+pad[3]-kw)/stride + 1
	if kh*kw == 1 || rowsPerBlock(n, wo, kh*kw*cin, ho, chunkBytes) == ho {
		return false
	}
	return !(conv.KeepsHalf("weight") && kh*kw*cin*cout*4 > widenPieceBytes)
}

// convBlocks is Conv2D(conv) of an [n, h, w, c] input that is never built
// whole: rows(r0, r1) builds input rows [r0, r1) in float32, and each block
// of output rows asks for the rows it reads (rows outside the image are the
// convolution's zero padding); opt.Residual's rows are added to each block,
// which is then kept as opt.Store. It returns nil where blocked says no.
func convBlocks(conv Scope, rows func(r0, r1 int) *Node, n, h, w, c, stride int, pad Padding, opt Blocked, chunkBytes int) *Node {
	if !blocked(conv, n, h, w, c, stride, pad, chunkBytes) {
		return nil
	}
	kernel := conv.Weight("weight", HWIO)
	kd := kernel.Shape().Dimensions
	kh, kw, cin, cout := kd[0], kd[1], kd[2], kd[3]
	ho := (h+pad[0]+pad[1]-kh)/stride + 1
	wo := (w+pad[2]+pad[3]-kw)/stride + 1
	block := rowsPerBlock(n, wo, kh*kw*cin, ho, chunkBytes)
	flat := Reshape(kernel, kh*kw*cin, cout)
	var bias *Node
	if conv.Has("bias") {
		bias = ExpandLeftToRank(conv.Weight("bias", AsStored), 4)
	}
	var blocks []*Node
	for y0 := 0; y0 < ho; y0 += block {
		y1 := min(ho, y0+block)
		// Input rows the block reads, in unpadded coordinates.
		a0, a1 := y0*stride-pad[0], (y1-1)*stride+kh-pad[0]
		c0, c1 := max(0, a0), min(h, a1)
		xb := padNHWC(rows(c0, c1), c0-a0, a1-c1, pad[2], pad[3])
		var cols []*Node
		for dy := 0; dy < kh; dy++ {
			cols = append(cols, taps(xb, 0, y1-y0, stride, wo, dy, 0, kw)...)
		}
		y := MatMul(patchMatrix(cols), flat)
		y = Reshape(y, n, y1-y0, wo, cout)
		if bias != nil {
			y = Add(y, bias)
		}
		if opt.Residual != nil {
			y = Add(opt.Residual(y0, y1), y)
		}
		if opt.Store != dtypes.InvalidDType && opt.Store != y.DType() {
			y = ConvertDType(y, opt.Store)
		}
		blocks = append(blocks, y)
	}
	return Concatenate(blocks, 1)
}

// LayerNorm normalizes the last axis with affine weight and bias.
func LayerNorm(s Scope, x *Node, eps float64) *Node {
	return gnn.LayerNorm(x, []int{-1}, eps, s.Weight("weight", AsStored), s.Weight("bias", AsStored), nil)
}

// SiLU is x·sigmoid(x).
func SiLU(x *Node) *Node { return Mul(x, Sigmoid(x)) }

// GELU is the exact (erf) GELU, as torch's default.
func GELU(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// QuickGELU is CLIP's x·sigmoid(1.702·x).
func QuickGELU(x *Node) *Node { return Mul(x, Sigmoid(MulScalar(x, 1.702))) }

// Activation applies a named activation ("silu", "gelu", "quick_gelu").
func Activation(name string, x *Node) *Node {
	switch name {
	case "silu", "swish":
		return SiLU(x)
	case "gelu":
		return GELU(x)
	case "quick_gelu":
		return QuickGELU(x)
	}
	panic(fmt.Errorf("unsupported activation %q", name))
}

// attentionChunkBytes bounds the score matrix one attention step holds:
// queries are processed in row blocks so that [B, heads, rows, Tk] float32
// stays under it. At SD1.5's 64×64 latents (4096 tokens, batch 2, 8 heads)
// the whole matrix is 1 GiB, and softmax needs several of them alive; at
// 32 MiB the 512×512 denoising step's peak is 251 MiB (384 MiB at 128 MiB)
// at the same speed.
const attentionChunkBytes = 32 << 20

// Attention is multi-head scaled dot-product attention with no mask (or
// with an additive mask broadcastable to [B, heads, Tq, Tk]): q [B, Tq, C],
// k and v [B, Tk, C] already projected; returns [B, Tq, C]. Long query
// sequences are computed in row blocks (the same math: softmax is per row),
// which bounds memory instead of materializing all Tq×Tk scores at once.
func Attention(q, k, v *Node, heads int, mask *Node) *Node {
	return attention(q, k, v, heads, mask, attentionChunkBytes)
}

func attention(q, k, v *Node, heads int, mask *Node, chunkBytes int) *Node {
	qd, kd := q.Shape().Dimensions, k.Shape().Dimensions
	b, tq, c := qd[0], qd[1], qd[2]
	tk := kd[1]
	if c%heads != 0 {
		panic(fmt.Errorf("attention: %d channels do not split into %d heads", c, heads))
	}
	dh := c / heads
	kh := Reshape(k, b, tk, heads, dh)
	vh := Reshape(v, b, tk, heads, dh)
	rowBytes := b * heads * tk * 4
	rows := tq
	if mask == nil && rowBytes*tq > chunkBytes {
		rows = max(1, chunkBytes/rowBytes)
	}
	var outs []*Node
	for start := 0; start < tq; start += rows {
		end := min(tq, start+rows)
		qc := q
		if rows < tq {
			qc = Slice(q, AxisRange(), AxisRange(start, end), AxisRange())
		}
		qh := Reshape(qc, b, end-start, heads, dh)
		scores := MulScalar(Einsum("bqhd,bkhd->bhqk", qh, kh), 1/math.Sqrt(float64(dh)))
		if mask != nil {
			scores = Add(scores, mask)
		}
		probs := Softmax(scores, -1)
		outs = append(outs, Reshape(Einsum("bhqk,bkhd->bqhd", probs, vh), b, end-start, c))
	}
	if len(outs) == 1 {
		return outs[0]
	}
	return Concatenate(outs, 1)
}

// UpsampleNearest2x doubles H and W of NHWC x by repetition, as
// F.interpolate(scale_factor=2, mode="nearest").
func UpsampleNearest2x(x *Node) *Node {
	d := x.Shape().Dimensions
	n, h, w, c := d[0], d[1], d[2], d[3]
	y := BroadcastToDims(Reshape(x, n, h, 1, w, 1, c), n, h, 2, w, 2, c)
	return Reshape(y, n, 2*h, 2*w, c)
}

// NCHWToNHWC and NHWCToNCHW convert at model boundaries.
func NCHWToNHWC(x *Node) *Node { return TransposeAllAxes(x, 0, 2, 3, 1) }

// NHWCToNCHW is the inverse of NCHWToNHWC.
func NHWCToNCHW(x *Node) *Node { return TransposeAllAxes(x, 0, 3, 1, 2) }
