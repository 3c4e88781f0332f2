package imageproc

import (
	"fmt"
	"math"
)

// Filter selects a resampling filter.
type Filter int

// The filters Resize implements, named as PIL names them.
const (
	// Lanczos is PIL's Image.LANCZOS, the filter diffusers'
	// VaeImageProcessor uses for control images.
	Lanczos Filter = iota
	// Nearest is PIL's Image.NEAREST.
	Nearest
)

func (f Filter) String() string {
	switch f {
	case Lanczos:
		return "lanczos"
	case Nearest:
		return "nearest"
	}
	return fmt.Sprintf("Filter(%d)", int(f))
}

// Resize returns m scaled to width×height as PIL's
// Image.resize((width, height), filter) does. When the size is unchanged it
// returns a copy, as PIL does (and as diffusers relies on: a control image
// already at the generation size passes through untouched).
func Resize(m *RGB, width, height int, filter Filter) (*RGB, error) {
	if err := m.valid(); err != nil {
		return nil, err
	}
	out, err := NewRGB(width, height)
	if err != nil {
		return nil, fmt.Errorf("imageproc: resize target: %w", err)
	}
	if width == m.Width && height == m.Height {
		copy(out.Pix, m.Pix)
		return out, nil
	}
	switch filter {
	case Nearest:
		resizeNearest(out, m)
		return out, nil
	case Lanczos:
		return resizeLanczos(m, width, height), nil
	}
	return nil, fmt.Errorf("imageproc: unknown resize filter %v", filter)
}

// resizeNearest mirrors Pillow's ImagingScaleAffine: source coordinates
// advance by repeated addition of the scale (not by multiplication), and
// truncate. The accumulated rounding decides which source pixel wins at
// exact half-way points, so it is reproduced as is.
func resizeNearest(out, in *RGB) {
	xscale := float64(in.Width) / float64(out.Width)
	yscale := float64(in.Height) / float64(out.Height)

	xin := make([]int, out.Width)
	xo := xscale * 0.5
	for x := range xin {
		xin[x] = truncCoord(xo, in.Width)
		xo += xscale
	}
	yo := yscale * 0.5
	for y := 0; y < out.Height; y++ {
		yi := truncCoord(yo, in.Height)
		yo += yscale
		row := out.Pix[3*y*out.Width : 3*(y+1)*out.Width]
		if yi < 0 {
			continue // Pillow fills pixels that map outside with zero.
		}
		src := in.Pix[3*yi*in.Width : 3*(yi+1)*in.Width]
		for x, xi := range xin {
			if xi < 0 {
				continue
			}
			copy(row[3*x:3*x+3], src[3*xi:3*xi+3])
		}
	}
}

// truncCoord is Pillow's COORD macro plus its bounds test: -1 when v maps
// outside [0, size).
func truncCoord(v float64, size int) int {
	if v < 0 {
		return -1
	}
	i := int(v)
	if i >= size {
		return -1
	}
	return i
}

// precisionBits is Pillow's PRECISION_BITS: coefficients are fixed point
// with 22 fractional bits, leaving 8 bits for the pixel and 2 for the
// overshoot of the negative-lobed filter, all inside an int32 accumulator.
const precisionBits = 32 - 8 - 2

// lanczosSupport is the radius of PIL's LANCZOS filter (a = 3).
const lanczosSupport = 3.0

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

// lanczos is Pillow's lanczos_filter: sinc(x)·sinc(x/3) on [-3, 3).
func lanczos(x float64) float64 {
	if -3 <= x && x < 3 {
		return sinc(x) * sinc(x/3)
	}
	return 0
}

// kernel holds the fixed-point weights of one resampling pass: output
// sample i reads inputs first[i] .. first[i]+count[i]-1 with weights
// weights[i*ksize : i*ksize+count[i]].
type kernel struct {
	ksize   int
	first   []int
	count   []int
	weights []int32
}

// precomputeKernel follows Pillow's precompute_coeffs followed by
// normalize_coeffs_8bpc for a box covering the whole input (in0 = 0,
// in1 = inSize). When downscaling the filter is stretched by the scale so
// that it also low-passes.
func precomputeKernel(inSize, outSize int) kernel {
	// Pillow holds the box in float32; sizes within our pixel limits are
	// exact in float32, so float64 of the size is the same number.
	scale := float64(inSize) / float64(outSize)
	filterscale := max(scale, 1.0)
	support := lanczosSupport * filterscale
	ksize := int(math.Ceil(support))*2 + 1

	k := kernel{
		ksize:   ksize,
		first:   make([]int, outSize),
		count:   make([]int, outSize),
		weights: make([]int32, outSize*ksize),
	}
	w := make([]float64, ksize)
	ss := 1.0 / filterscale
	for xx := 0; xx < outSize; xx++ {
		center := (float64(xx) + 0.5) * scale
		// int() truncates toward zero like C's cast; negative starts are
		// clamped to zero anyway.
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			w[x] = lanczos((float64(x+xmin) - center + 0.5) * ss)
			ww += w[x]
		}
		for x := 0; x < xmax; x++ {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			// Round half away from zero, then truncate, as Pillow does;
			// the explicit float64 conversion keeps the compiler from
			// fusing the multiply and add.
			f := float64(v * (1 << precisionBits))
			if f < 0 {
				k.weights[xx*ksize+x] = int32(f - 0.5)
			} else {
				k.weights[xx*ksize+x] = int32(f + 0.5)
			}
		}
		k.first[xx] = xmin
		k.count[xx] = xmax
	}
	return k
}

// clip8 converts an accumulator to a pixel: drop the fraction bits
// (arithmetic shift, i.e. floor; the half was added up front) and saturate.
func clip8(ss int32) uint8 {
	v := ss >> precisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// resizeLanczos is Pillow's ImagingResampleInner for 8-bit images: a
// horizontal pass into an 8-bit intermediate (rounded and clipped), then a
// vertical pass, each skipped when its dimension is unchanged. The
// intermediate is rounded to 8 bits on purpose: doing both passes in one
// accumulator would be more accurate but no longer PIL.
func resizeLanczos(in *RGB, width, height int) *RGB {
	needH := width != in.Width
	needV := height != in.Height

	src := in
	if needH {
		kh := precomputeKernel(in.Width, width)
		tmp := &RGB{Width: width, Height: in.Height, Pix: make([]uint8, 3*width*in.Height)}
		// Pillow filters only the rows the vertical pass will read. Each
		// row's result does not depend on the others, so filtering every
		// row gives the same output.
		for y := 0; y < in.Height; y++ {
			srow := in.Pix[3*y*in.Width : 3*(y+1)*in.Width]
			drow := tmp.Pix[3*y*width : 3*(y+1)*width]
			for xx := 0; xx < width; xx++ {
				wts := kh.weights[xx*kh.ksize : xx*kh.ksize+kh.count[xx]]
				base := 3 * kh.first[xx]
				r, g, b := int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1))
				for x, wt := range wts {
					p := srow[base+3*x : base+3*x+3]
					r += int32(p[0]) * wt
					g += int32(p[1]) * wt
					b += int32(p[2]) * wt
				}
				drow[3*xx], drow[3*xx+1], drow[3*xx+2] = clip8(r), clip8(g), clip8(b)
			}
		}
		src = tmp
	}
	if !needV {
		return src
	}
	kv := precomputeKernel(in.Height, height)
	out := &RGB{Width: src.Width, Height: height, Pix: make([]uint8, 3*src.Width*height)}
	stride := 3 * src.Width
	acc := make([]int32, stride)
	for yy := 0; yy < height; yy++ {
		wts := kv.weights[yy*kv.ksize : yy*kv.ksize+kv.count[yy]]
		for i := range acc {
			acc[i] = 1 << (precisionBits - 1)
		}
		for y, wt := range wts {
			srow := src.Pix[(kv.first[yy]+y)*stride : (kv.first[yy]+y+1)*stride]
			for i, p := range srow {
				acc[i] += int32(p) * wt
			}
		}
		drow := out.Pix[yy*stride : (yy+1)*stride]
		for i, a := range acc {
			drow[i] = clip8(a)
		}
	}
	return out
}
