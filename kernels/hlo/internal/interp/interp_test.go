package interp_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/hlo/internal/interp"
)

// Hand-computed cases, one or a few ops each, written in the syntax
// go-xla's builder emits. Each expected value is worked out in the
// comment next to it.

// module wraps statements in a main function.
func module(params, results, body string) string {
	return "module @test {\n  func.func @main(" + params + ") -> " + results + " {\n" + body + "\n  }\n}\n"
}

func run(t *testing.T, text string, inputs ...interp.Tensor) []interp.Tensor {
	t.Helper()
	m, err := interp.Parse([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	out, err := m.Run(inputs)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out
}

func f32s(dims []int, v ...float32) interp.Tensor { return interp.NewF32(interp.F32, v, dims...) }

func wantF32(t *testing.T, what string, got interp.Tensor, dims []int, want ...float32) {
	t.Helper()
	if got.DType != interp.F32 && got.DType != interp.F16 || !slices.Equal(got.Dims, dims) {
		t.Errorf("%s: %s %v, want %v", what, got.DType, got.Dims, dims)
		return
	}
	for i := range want {
		if got.F32[i] != want[i] && !(math.IsNaN(float64(want[i])) && math.IsNaN(float64(got.F32[i]))) {
			t.Errorf("%s: got %v, want %v", what, got.F32, want)
			return
		}
	}
}

func wantBools(t *testing.T, what string, got interp.Tensor, want ...bool) {
	t.Helper()
	if got.DType != interp.I1 || !slices.Equal(got.Bools, want) {
		t.Errorf("%s: got %s %v, want %v", what, got.DType, got.Bools, want)
	}
}

func wantInts(t *testing.T, what string, got interp.Tensor, dt interp.DType, want ...int64) {
	t.Helper()
	if got.DType != dt || !slices.Equal(got.Ints, want) {
		t.Errorf("%s: got %s %v, want %s %v", what, got.DType, got.Ints, dt, want)
	}
}

const convAttrs = `
      batch_group_count = 1 : i64,
      dimension_numbers = #stablehlo.conv<%DN%>,
      feature_group_count = %G% : i64,
      lhs_dilation = array<i64: %LD%>,
      padding = dense<%PAD%> : tensor<%PT%xi64>,
      precision_config = [#stablehlo<precision DEFAULT>, #stablehlo<precision DEFAULT>],
      rhs_dilation = array<i64: %RD%>,
      window_reversal = array<i1: %REV%>,
      window_strides = array<i64: %ST%>`

func conv(kv ...string) string {
	return strings.NewReplacer(kv...).Replace(convAttrs)
}

// NHWC input 1..9 (3×3), HWIO kernel [[1, 2], [3, 4]], stride 2, one row
// and column of low padding: the 4×4 padded input gives 2×2 windows.
//
//	(0,0): only x[0,0]=1 under w[1,1]=4            -> 4
//	(0,1): x[0,1]·w[1,0] + x[0,2]·w[1,1] = 2·3+3·4 -> 18
//	(1,0): x[1,0]·w[0,1] + x[2,0]·w[1,1] = 4·2+7·4 -> 36
//	(1,1): 5·1 + 6·2 + 8·3 + 9·4                    -> 77
func TestConvolutionStridedPadded(t *testing.T) {
	text := module("%x: tensor<1x3x3x1xf32>, %w: tensor<2x2x1x1xf32>", "tensor<1x2x2x1xf32>", `
    %0 = "stablehlo.convolution"(%x, %w) {`+conv("%DN%", "[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]", "%G%", "1",
		"%LD%", "1, 1", "%PAD%", "[[1, 0], [1, 0]]", "%PT%", "2x2", "%RD%", "1, 1", "%REV%", "false, false", "%ST%", "2, 2")+`
    } : (tensor<1x3x3x1xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x2x1xf32>
    "stablehlo.return"(%0) : (tensor<1x2x2x1xf32>) -> ()`)
	out := run(t, text, f32s([]int{1, 3, 3, 1}, 1, 2, 3, 4, 5, 6, 7, 8, 9), f32s([]int{2, 2, 1, 1}, 1, 2, 3, 4))
	wantF32(t, "conv", out[0], []int{1, 2, 2, 1}, 4, 18, 36, 77)
}

// NCW input, 2 channels: ch0 = [1, 2, 3], ch1 = [10, 20, 30]; OIW kernel,
// feature_group_count 2 so output 0 sees ch0 with taps [1, -1] and
// output 1 sees ch1 with taps [1, 2]. lhs_dilation 2 gives [1,0,2,0,3];
// rhs_dilation 2 puts the taps 2 apart (window 3), so 3 outputs:
//
//	ch0: 1-2 = -1, 0-0 = 0, 2-3 = -1
//	ch1: 10+2·20 = 50, 0, 20+2·30 = 80
//
// With window_reversal the taps swap: ch0: -1+2 = 1, 0, -2+3 = 1.
func TestConvolutionGroupedDilated(t *testing.T) {
	for _, c := range []struct {
		rev  string
		want []float32
	}{{"false", []float32{-1, 0, -1, 50, 0, 80}}, {"true", []float32{1, 0, 1, 2*10 + 20, 0, 2*20 + 30}}} {
		text := module("%x: tensor<1x2x3xf32>, %w: tensor<2x1x2xf32>", "tensor<1x2x3xf32>", `
    %0 = "stablehlo.convolution"(%x, %w) {`+conv("%DN%", "[b, f, 0]x[o, i, 0]->[b, f, 0]", "%G%", "2",
			"%LD%", "2", "%PAD%", "[[0, 0]]", "%PT%", "1x2", "%RD%", "2", "%REV%", c.rev, "%ST%", "1")+`
    } : (tensor<1x2x3xf32>, tensor<2x1x2xf32>) -> tensor<1x2x3xf32>
    "stablehlo.return"(%0) : (tensor<1x2x3xf32>) -> ()`)
		out := run(t, text, f32s([]int{1, 2, 3}, 1, 2, 3, 10, 20, 30), f32s([]int{2, 1, 2}, 1, -1, 1, 2))
		wantF32(t, "grouped conv, reversal "+c.rev, out[0], []int{1, 2, 3}, c.want...)
	}
}

const dotAttrs = `{
      dot_dimension_numbers = #stablehlo.dot<
  lhs_batching_dimensions = [%LB%],
  rhs_batching_dimensions = [%RB%],
  lhs_contracting_dimensions = [%LC%],
  rhs_contracting_dimensions = [%RC%]
>,
      precision_config = [#stablehlo<precision DEFAULT>, #stablehlo<precision DEFAULT>]
    }`

// Batch 0: [[1,2,3],[4,5,6]]·[1,1,1]ᵀ = [6, 15]; batch 1:
// [[1,0,0],[0,1,0]]·[7,8,9]ᵀ = [7, 8]. Then a contraction over the first
// axes: [[1,2],[3,4],[5,6]]ᵀ·[[1,0],[0,1],[1,1]] = [[6,8],[8,10]].
func TestDotGeneral(t *testing.T) {
	text := module("%a: tensor<2x2x3xf32>, %b: tensor<2x3x1xf32>", "tensor<2x2x1xf32>", `
    %0 = "stablehlo.dot_general"(%a, %b) `+strings.NewReplacer("%LB%", "0", "%RB%", "0", "%LC%", "2", "%RC%", "1").Replace(dotAttrs)+` : (tensor<2x2x3xf32>, tensor<2x3x1xf32>) -> tensor<2x2x1xf32>
    "stablehlo.return"(%0) : (tensor<2x2x1xf32>) -> ()`)
	out := run(t, text, f32s([]int{2, 2, 3}, 1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0), f32s([]int{2, 3, 1}, 1, 1, 1, 7, 8, 9))
	wantF32(t, "batched", out[0], []int{2, 2, 1}, 6, 15, 7, 8)

	text = module("%a: tensor<3x2xf32>, %b: tensor<3x2xf32>", "tensor<2x2xf32>", `
    %0 = "stablehlo.dot_general"(%a, %b) `+strings.NewReplacer("%LB%", "", "%RB%", "", "%LC%", "0", "%RC%", "0").Replace(dotAttrs)+` : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<2x2xf32>
    "stablehlo.return"(%0) : (tensor<2x2xf32>) -> ()`)
	out = run(t, text, f32s([]int{3, 2}, 1, 2, 3, 4, 5, 6), f32s([]int{3, 2}, 1, 0, 0, 1, 1, 1))
	wantF32(t, "transposed", out[0], []int{2, 2}, 6, 8, 8, 10)
}

// An embedding lookup as the text encoder does it: rows 3, 0 and 9 of a
// 4-row table, where 9 is clamped to the last row (the spec clamps start
// indices so the slice stays inside). Then 2×2 windows of a 3×3 matrix
// starting at (0, 1) and at (2, 2), the latter clamped to (1, 1).
func TestGather(t *testing.T) {
	text := module("%t: tensor<4x2xf32>, %i: tensor<3x1xi32>", "tensor<3x2xf32>", `
    %0 = "stablehlo.gather"(%t, %i) {
      dimension_numbers = #stablehlo.gather<
  offset_dims = [1],
  collapsed_slice_dims = [0],
  operand_batching_dims = [],
  start_indices_batching_dims = [],
  start_index_map = [0],
  index_vector_dim = 1>,
      indices_are_sorted = false,
      slice_sizes = array<i64: 1, 2>
    } : (tensor<4x2xf32>, tensor<3x1xi32>) -> tensor<3x2xf32>
    "stablehlo.return"(%0) : (tensor<3x2xf32>) -> ()`)
	out := run(t, text, f32s([]int{4, 2}, 0, 1, 10, 11, 20, 21, 30, 31), interp.NewInts(interp.I32, []int64{3, 0, 9}, 3, 1))
	wantF32(t, "rows", out[0], []int{3, 2}, 30, 31, 0, 1, 30, 31)

	text = module("%t: tensor<3x3xf32>, %i: tensor<2x2xi64>", "tensor<2x2x2xf32>", `
    %0 = "stablehlo.gather"(%t, %i) {
      dimension_numbers = #stablehlo.gather<
  offset_dims = [1, 2],
  collapsed_slice_dims = [],
  operand_batching_dims = [],
  start_indices_batching_dims = [],
  start_index_map = [0, 1],
  index_vector_dim = 1>,
      indices_are_sorted = false,
      slice_sizes = array<i64: 2, 2>
    } : (tensor<3x3xf32>, tensor<2x2xi64>) -> tensor<2x2x2xf32>
    "stablehlo.return"(%0) : (tensor<2x2x2xf32>) -> ()`)
	out = run(t, text, f32s([]int{3, 3}, 0, 1, 2, 3, 4, 5, 6, 7, 8), interp.NewInts(interp.I64, []int64{0, 1, 2, 2}, 2, 2))
	wantF32(t, "windows", out[0], []int{2, 2, 2}, 1, 2, 4, 5, 4, 5, 7, 8)
}

func reduceText(body, dims, outType string) string {
	return module("%x: tensor<2x3xf32>, %init: tensor<f32>", outType, `
    %0 = "stablehlo.reduce"(%x, %init) ({
      ^reductionFn(%lhs: tensor<f32>, %rhs: tensor<f32>) :
`+body+`
    }) { dimensions = array<i64: `+dims+`> } : (tensor<2x3xf32>, tensor<f32>) -> `+outType+`
    "stablehlo.return"(%0) : (`+outType+`) -> ()`)
}

// x = [[1, 5, 3], [-2, 0, 7]]: row sums 9, 5; column maxima 1, 5, 7; the
// sum of all from init 10 is 24. A body that is not a single op,
// f(acc, v) = 2·(acc + v), runs as a region in row-major order:
// from 0 over 1, 5, 3 gives 2, 14, 34.
func TestReduce(t *testing.T) {
	x := f32s([]int{2, 3}, 1, 5, 3, -2, 0, 7)
	add := `          %1 = "stablehlo.add"(%lhs, %rhs) : (tensor<f32>, tensor<f32>) -> tensor<f32>
          "stablehlo.return"(%1) : (tensor<f32>) -> ()`
	maxBody := strings.ReplaceAll(add, "add", "maximum")
	wantF32(t, "sum over axis 1", run(t, reduceText(add, "1", "tensor<2xf32>"), x, f32s(nil, 0))[0], []int{2}, 9, 5)
	wantF32(t, "max over axis 0", run(t, reduceText(maxBody, "0", "tensor<3xf32>"), x, f32s(nil, float32(math.Inf(-1))))[0], []int{3}, 1, 5, 7)
	wantF32(t, "sum of all", run(t, reduceText(add, "0, 1", "tensor<f32>"), x, f32s(nil, 10))[0], []int{}, 24)
	twice := `          %1 = "stablehlo.add"(%lhs, %rhs) : (tensor<f32>, tensor<f32>) -> tensor<f32>
          %2 = "stablehlo.add"(%1, %1) : (tensor<f32>, tensor<f32>) -> tensor<f32>
          "stablehlo.return"(%2) : (tensor<f32>) -> ()`
	wantF32(t, "region body", run(t, reduceText(twice, "1", "tensor<2xf32>"), x, f32s(nil, 0))[0], []int{2}, 34, 2*(2*(2*(-2)+0)+7))
}

// [3] to [2, 3] along axis 1 repeats the row; [2, 1] to [2, 3] along
// (0, 1) stretches the size-1 axis; a scalar fills everything.
func TestBroadcastInDim(t *testing.T) {
	text := module("%a: tensor<3xf32>, %b: tensor<2x1xf32>, %c: tensor<f32>", "(tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x2xf32>)", `
    %0 = "stablehlo.broadcast_in_dim"(%a) { broadcast_dimensions = array<i64: 1> } : (tensor<3xf32>) -> tensor<2x3xf32>
    %1 = "stablehlo.broadcast_in_dim"(%b) { broadcast_dimensions = array<i64: 0, 1> } : (tensor<2x1xf32>) -> tensor<2x3xf32>
    %2 = "stablehlo.broadcast_in_dim"(%c) { broadcast_dimensions = array<i64> } : (tensor<f32>) -> tensor<2x2xf32>
    "stablehlo.return"(%0, %1, %2) : (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x2xf32>) -> ()`)
	out := run(t, text, f32s([]int{3}, 1, 2, 3), f32s([]int{2, 1}, 7, 8), f32s(nil, 5))
	wantF32(t, "row", out[0], []int{2, 3}, 1, 2, 3, 1, 2, 3)
	wantF32(t, "column", out[1], []int{2, 3}, 7, 7, 7, 8, 8, 8)
	wantF32(t, "scalar", out[2], []int{2, 2}, 5, 5, 5, 5)
}

// x = [1, NaN, 3], y = [2, 2, 3]: x < y only at 0 (NaN compares false),
// x != y at 0 and 1 (NaN is unequal); select(x < y, x, y) = [1, 2, 3].
// Signed integers: [-1, 4] >= [3, 4] is [false, true]. A scalar predicate
// selects whole operands.
func TestCompareSelect(t *testing.T) {
	cmp := func(dir string) string {
		return `"stablehlo.compare"(%x, %y) {
      compare_type = #stablehlo<comparison_type FLOAT>,
      comparison_direction = #stablehlo<comparison_direction ` + dir + `>
    } : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xi1>`
	}
	text := module("%x: tensor<3xf32>, %y: tensor<3xf32>, %i: tensor<2xi32>, %j: tensor<2xi32>, %p: tensor<i1>",
		"(tensor<3xi1>, tensor<3xi1>, tensor<3xf32>, tensor<2xi1>, tensor<3xf32>)", `
    %0 = `+cmp("LT")+`
    %1 = `+cmp("NE")+`
    %2 = "stablehlo.select"(%0, %x, %y) : (tensor<3xi1>, tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    %3 = "stablehlo.compare"(%i, %j) {
      compare_type = #stablehlo<comparison_type SIGNED>,
      comparison_direction = #stablehlo<comparison_direction GE>
    } : (tensor<2xi32>, tensor<2xi32>) -> tensor<2xi1>
    %4 = "stablehlo.select"(%p, %x, %y) : (tensor<i1>, tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
    "stablehlo.return"(%0, %1, %2, %3, %4) : (tensor<3xi1>, tensor<3xi1>, tensor<3xf32>, tensor<2xi1>, tensor<3xf32>) -> ()`)
	nan := float32(math.NaN())
	out := run(t, text, f32s([]int{3}, 1, nan, 3), f32s([]int{3}, 2, 2, 3),
		interp.NewInts(interp.I32, []int64{-1, 4}, 2), interp.NewInts(interp.I32, []int64{3, 4}, 2), interp.NewBools([]bool{false}))
	wantBools(t, "LT", out[0], true, false, false)
	wantBools(t, "NE", out[1], true, true, false)
	wantF32(t, "select", out[2], []int{3}, 1, 2, 3)
	wantBools(t, "GE signed", out[3], false, true)
	wantF32(t, "scalar select", out[4], []int{3}, 2, 2, 3)
}

// transpose [[1,2,3],[4,5,6]] -> [[1,4],[2,5],[3,6]]; slice 1:5:2 of
// [0..4] -> [1, 3]; pad [1, 2] low 1, interior 1, high -1 with 9 ->
// [9, 1, 9, 2] cropped to [9, 1, 9]; concatenate [[1, 2]] and [[3]] on
// axis 1; iota along axis 1 of 2×3; reshape keeps the order.
func TestDataMovement(t *testing.T) {
	text := module("%a: tensor<2x3xf32>, %b: tensor<5xf32>, %c: tensor<2xf32>, %fill: tensor<f32>, %d: tensor<1x2xf32>, %e: tensor<1x1xf32>",
		"(tensor<3x2xf32>, tensor<2xf32>, tensor<3xf32>, tensor<1x3xf32>, tensor<2x3xi32>, tensor<3x2xf32>)", `
    %0 = "stablehlo.transpose"(%a) { permutation = array<i64: 1, 0> } : (tensor<2x3xf32>) -> tensor<3x2xf32>
    %1 = "stablehlo.slice"(%b) {
      limit_indices = array<i64: 5>,
      start_indices = array<i64: 1>,
      strides = array<i64: 2>
    } : (tensor<5xf32>) -> tensor<2xf32>
    %2 = "stablehlo.pad"(%c, %fill) {
      edge_padding_high = array<i64: -1>,
      edge_padding_low = array<i64: 1>,
      interior_padding = array<i64: 1>
    } : (tensor<2xf32>, tensor<f32>) -> tensor<3xf32>
    %3 = "stablehlo.concatenate"(%d, %e) { dimension = 1 : i64 } : (tensor<1x2xf32>, tensor<1x1xf32>) -> tensor<1x3xf32>
    %4 = "stablehlo.iota"() { iota_dimension = 1 : i64 } : () -> tensor<2x3xi32>
    %5 = "stablehlo.reshape"(%a) : (tensor<2x3xf32>) -> tensor<3x2xf32>
    "stablehlo.return"(%0, %1, %2, %3, %4, %5) : (tensor<3x2xf32>, tensor<2xf32>, tensor<3xf32>, tensor<1x3xf32>, tensor<2x3xi32>, tensor<3x2xf32>) -> ()`)
	out := run(t, text, f32s([]int{2, 3}, 1, 2, 3, 4, 5, 6), f32s([]int{5}, 0, 1, 2, 3, 4), f32s([]int{2}, 1, 2), f32s(nil, 9),
		f32s([]int{1, 2}, 1, 2), f32s([]int{1, 1}, 3))
	wantF32(t, "transpose", out[0], []int{3, 2}, 1, 4, 2, 5, 3, 6)
	wantF32(t, "slice", out[1], []int{2}, 1, 3)
	wantF32(t, "pad", out[2], []int{3}, 9, 1, 9)
	wantF32(t, "concatenate", out[3], []int{1, 3}, 1, 2, 3)
	wantInts(t, "iota", out[4], interp.I32, 0, 1, 2, 0, 1, 2)
	wantF32(t, "reshape", out[5], []int{3, 2}, 1, 2, 3, 4, 5, 6)
}

// convert: f32 -> i32 truncates toward zero; f32 -> f16 rounds to
// nearest even (-1.7 -> -1.7001953125 = -(1 + 717/1024); 65519 -> 65504,
// the largest f16, since it is below the 65520 midpoint to infinity);
// i1 -> f32 is 0/1. f16 arithmetic rounds each result: 1 + 2^-11 is a tie
// that goes to 1 (even); 1 + 3·2^-11 ties to 1 + 2^-9. Constants are read
// in every form the exporter writes, hex for -inf.
func TestConvertAndF16(t *testing.T) {
	text := module("%x: tensor<3xf32>, %p: tensor<2xi1>, %a: tensor<2xf16>, %b: tensor<2xf16>",
		"(tensor<3xi32>, tensor<3xf16>, tensor<2xf32>, tensor<2xf16>, tensor<2x2xf32>, tensor<f32>, tensor<2xi64>)", `
    %0 = "stablehlo.convert"(%x) : (tensor<3xf32>) -> tensor<3xi32>
    %1 = "stablehlo.convert"(%x) : (tensor<3xf32>) -> tensor<3xf16>
    %2 = "stablehlo.convert"(%p) : (tensor<2xi1>) -> tensor<2xf32>
    %3 = "stablehlo.add"(%a, %b) : (tensor<2xf16>, tensor<2xf16>) -> tensor<2xf16>
    %4 = "stablehlo.constant"() { value = dense<[[1.0, -2.5e-06], [0.0, 3.0]]> : tensor<2x2xf32> } : () -> tensor<2x2xf32>
    %5 = "stablehlo.constant"() { value = dense<0xFF800000> : tensor<f32> } : () -> tensor<f32>
    %6 = "stablehlo.constant"() { value = dense<7> : tensor<2xi64> } : () -> tensor<2xi64>
    "stablehlo.return"(%0, %1, %2, %3, %4, %5, %6) : (tensor<3xi32>, tensor<3xf16>, tensor<2xf32>, tensor<2xf16>, tensor<2x2xf32>, tensor<f32>, tensor<2xi64>) -> ()`)
	out := run(t, text, f32s([]int{3}, -1.7, 2.5, 65519), interp.NewBools([]bool{true, false}, 2),
		interp.NewF32(interp.F16, []float32{1, 1}, 2), interp.NewF32(interp.F16, []float32{1.0 / 2048, 3.0 / 2048}, 2))
	wantInts(t, "f32->i32", out[0], interp.I32, -1, 2, 65519)
	wantF32(t, "f32->f16", out[1], []int{3}, -1.7001953125, 2.5, 65504)
	wantF32(t, "i1->f32", out[2], []int{2}, 1, 0)
	wantF32(t, "f16 add", out[3], []int{2}, 1, 1+1.0/512)
	wantF32(t, "dense", out[4], []int{2, 2}, 1, -2.5e-06, 0, 3)
	wantF32(t, "hex", out[5], []int{}, float32(math.Inf(-1)))
	wantInts(t, "splat", out[6], interp.I64, 7, 7)
}

// Elementwise ops as the spec defines them, on values whose results are
// exact or well known.
func TestElementwise(t *testing.T) {
	ops := []struct {
		op   string
		in   []float32
		want []float32
	}{
		{"stablehlo.negate", []float32{1, -2}, []float32{-1, 2}},
		{"stablehlo.abs", []float32{-3, 2}, []float32{3, 2}},
		{"stablehlo.sqrt", []float32{4, 9}, []float32{2, 3}},
		{"stablehlo.rsqrt", []float32{4, 0.25}, []float32{0.5, 2}},
		{"stablehlo.exponential", []float32{0, 1}, []float32{1, float32(math.E)}},
		{"stablehlo.log", []float32{1, 4}, []float32{0, float32(math.Log(4))}},
		{"stablehlo.logistic", []float32{0, float32(math.Log(3))}, []float32{0.5, 0.75}},
		{"stablehlo.tanh", []float32{0, 1}, []float32{0, float32(math.Tanh(1))}},
		{"chlo.erf", []float32{0, 1}, []float32{0, float32(math.Erf(1))}},
		{"stablehlo.sine", []float32{0, 1}, []float32{0, float32(math.Sin(1))}},
		{"stablehlo.cosine", []float32{0, 1}, []float32{1, float32(math.Cos(1))}},
		{"stablehlo.floor", []float32{-1.5, 1.5}, []float32{-2, 1}},
		{"stablehlo.round_nearest_even", []float32{2.5, -0.5}, []float32{2, 0}},
		{"stablehlo.sign", []float32{-3, 0}, []float32{-1, 0}},
	}
	for _, c := range ops {
		text := module("%x: tensor<2xf32>", "tensor<2xf32>", `
    %0 = "`+c.op+`"(%x) : (tensor<2xf32>) -> tensor<2xf32>
    "stablehlo.return"(%0) : (tensor<2xf32>) -> ()`)
		wantF32(t, c.op, run(t, text, f32s([]int{2}, c.in...))[0], []int{2}, c.want...)
	}
	bin := []struct {
		op   string
		want []float32
	}{
		{"add", []float32{5, -1}}, {"subtract", []float32{-3, 7}}, {"multiply", []float32{4, -12}},
		{"divide", []float32{0.25, -0.75}}, {"maximum", []float32{4, 3}}, {"minimum", []float32{1, -4}}, {"power", []float32{1, 1.0 / 81}},
	}
	for _, c := range bin {
		text := module("%x: tensor<2xf32>, %y: tensor<2xf32>", "tensor<2xf32>", `
    %0 = "stablehlo.`+c.op+`"(%x, %y) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    "stablehlo.return"(%0) : (tensor<2xf32>) -> ()`)
		wantF32(t, c.op, run(t, text, f32s([]int{2}, 1, 3), f32s([]int{2}, 4, -4))[0], []int{2}, c.want...)
	}
	text := module("%lo: tensor<f32>, %x: tensor<3xf32>, %hi: tensor<f32>", "tensor<3xf32>", `
    %0 = "stablehlo.clamp"(%lo, %x, %hi) : (tensor<f32>, tensor<3xf32>, tensor<f32>) -> tensor<3xf32>
    "stablehlo.return"(%0) : (tensor<3xf32>) -> ()`)
	wantF32(t, "clamp", run(t, text, f32s(nil, 0), f32s([]int{3}, -1, 0.5, 2), f32s(nil, 1))[0], []int{3}, 0, 0.5, 1)
}

// What the interpreter does not know is an error naming it, at Parse; a
// shape or dtype that disagrees with the text is an error too.
func TestErrors(t *testing.T) {
	const tr = `
    %0 = "stablehlo.transpose"(%x) { permutation = array<i64: 1, 0> } : (tensor<2x3xf32>) -> tensor<3x2xf32>
    "stablehlo.return"(%0) : (tensor<3x2xf32>) -> ()`
	good := module("%x: tensor<2x3xf32>", "tensor<3x2xf32>", tr)
	for _, c := range []struct{ what, text, want string }{
		{"unknown op", strings.Replace(good, "stablehlo.transpose", "stablehlo.cbrt", 1), "unsupported op stablehlo.cbrt"},
		{"unknown attribute", strings.Replace(good, "permutation = array<i64: 1, 0>", "permutation = array<i64: 1, 0>, mode = 3 : i64", 1), "unsupported attribute mode"},
		{"missing attribute", strings.Replace(good, "permutation = array<i64: 1, 0>", "perm = array<i64: 1, 0>", 1), "missing attribute permutation"},
		{"unknown dtype", strings.ReplaceAll(good, "xf32", "xf64"), "unsupported element type"},
		{"wrong result type", strings.Replace(good, "-> tensor<3x2xf32>\n", "-> tensor<2x3xf32>\n", 1), "transpose"},
		{"unknown dot field", module("%a: tensor<2xf32>, %b: tensor<2xf32>", "tensor<f32>", `
    %0 = "stablehlo.dot_general"(%a, %b) {
      dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [0], rhs_contracting_dimensions = [0], lhs_ragged_dimensions = [0]>
    } : (tensor<2xf32>, tensor<2xf32>) -> tensor<f32>
    "stablehlo.return"(%0) : (tensor<f32>) -> ()`), "lhs_ragged_dimensions"},
		{"unsupported comparison", module("%a: tensor<2xf32>", "tensor<2xi1>", `
    %0 = "stablehlo.compare"(%a, %a) {
      compare_type = #stablehlo<comparison_type TOTALORDER>,
      comparison_direction = #stablehlo<comparison_direction LT>
    } : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xi1>
    "stablehlo.return"(%0) : (tensor<2xi1>) -> ()`), "TOTALORDER"},
	} {
		_, err := interp.Parse([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.what, err, c.want)
		}
	}
	m, err := interp.Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run([]interp.Tensor{f32s([]int{3, 2}, 1, 2, 3, 4, 5, 6)}); err == nil || !strings.Contains(err.Error(), "main takes tensor<2x3xf32>") {
		t.Errorf("wrong input shape: error %v", err)
	}
	if _, err := m.Run([]interp.Tensor{f32s([]int{2, 3}, 1, 2)}); err == nil || !strings.Contains(err.Error(), "holds 2 values") {
		t.Errorf("short input data: error %v", err)
	}
}
