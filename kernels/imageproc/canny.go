package imageproc

import "fmt"

// OpenCV's fixed-point BT.601 luma weights for cvtColor(RGB2GRAY) on 8-bit
// images. OpenCV 4.x uses 15 fractional bits (RY15, GY15, BY15 with
// gray_shift = 15; the three sum to 1<<15), not the 14-bit R2Y/G2Y/B2Y
// (4899, 9617, 1868) of older releases: the two disagree on pixels whose
// exact luma is within a hair of n+0.5, 11 pixels of the golden images.
const (
	grayShift = 15
	grayR     = 9798  // round(0.299 * 2^15)
	grayG     = 19235 // round(0.587 * 2^15)
	grayB     = 3735  // round(0.114 * 2^15)
)

// ToGray converts to grey as cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) does on
// 8-bit input in OpenCV 4.x: (9798·R + 19235·G + 3735·B + 2^14) >> 15.
func ToGray(m *RGB) (*Gray, error) {
	if err := m.valid(); err != nil {
		return nil, err
	}
	out := &Gray{Width: m.Width, Height: m.Height, Pix: make([]uint8, m.Width*m.Height)}
	for i := range out.Pix {
		p := m.Pix[3*i : 3*i+3 : 3*i+3]
		v := uint32(p[0])*grayR + uint32(p[1])*grayG + uint32(p[2])*grayB
		out.Pix[i] = uint8((v + 1<<(grayShift-1)) >> grayShift)
	}
	return out, nil
}

// Canny map states, as OpenCV names them in its implementation.
const (
	mapCandidate = 0 // passed non-maximum suppression and the low threshold
	mapNotEdge   = 1
	mapEdge      = 2
)

// tg22 is tan(22.5°) in Q15, OpenCV's CANNY_SHIFT fixed point:
// (int)(0.4142135623730950488016887242097 * (1<<15) + 0.5) = 13573.
const (
	cannyShift = 15
	tg22       = 13573
)

// Canny detects edges as cv2.Canny(gray, low, high) does with
// apertureSize=3 and L2gradient=false (OpenCV 4.6): 3×3 Sobel gradients with
// replicated borders, L1 magnitude |dx|+|dy|, non-maximum suppression along
// the gradient direction quantised to 0°/45°/90°/135° with OpenCV's integer
// tangent test and tie rules, then hysteresis: pixels with magnitude > high
// seed edges that grow through 8-connected pixels with magnitude > low.
// As cv2 does, the thresholds are swapped when low > high (cv2 takes
// doubles but floors them before comparing integer magnitudes, so integer
// thresholds lose nothing). The result holds 255 on edges and 0 elsewhere.
func Canny(g *Gray, low, high int) (*Gray, error) {
	if err := g.valid(); err != nil {
		return nil, err
	}
	if low > high {
		low, high = high, low
	}
	w, h := g.Width, g.Height

	// The map has a one-pixel frame of mapNotEdge so that hysteresis can
	// look at all 8 neighbours without bounds checks.
	mapStride := w + 2
	emap := make([]uint8, mapStride*(h+2))
	for i := range emap {
		emap[i] = mapNotEdge
	}

	// Magnitudes are streamed through three rows (previous, current,
	// next), each padded with a zero on both sides: non-maximum suppression
	// treats everything outside the image as magnitude 0. Gradients are
	// only kept for the current row.
	magRows := [3][]int32{make([]int32, w+2), make([]int32, w+2), make([]int32, w+2)}
	dx := [2][]int16{make([]int16, w), make([]int16, w)}
	dy := [2][]int16{make([]int16, w), make([]int16, w)}
	prev, cur, next := magRows[0], magRows[1], magRows[2]
	curDX, curDY, nextDX, nextDY := dx[0], dy[0], dx[1], dy[1]

	sobelRow(g, 0, curDX, curDY, cur)
	var stack []int
	for y := 0; y < h; y++ {
		if y+1 < h {
			sobelRow(g, y+1, nextDX, nextDY, next)
		} else {
			clear(next)
		}
		mrow := emap[(y+1)*mapStride+1:]
		for x := 0; x < w; x++ {
			m := cur[x+1]
			if int(m) <= low || !isLocalMax(m, int32(curDX[x]), int32(curDY[x]), prev[x:x+3], cur[x:x+3], next[x:x+3]) {
				continue // stays mapNotEdge
			}
			if int(m) > high {
				mrow[x] = mapEdge
				stack = append(stack, (y+1)*mapStride+x+1)
			} else {
				mrow[x] = mapCandidate
			}
		}
		prev, cur, next = cur, next, prev
		curDX, nextDX = nextDX, curDX
		curDY, nextDY = nextDY, curDY
	}

	// Hysteresis: grow edges from the strong pixels through candidates.
	// The frame is never a candidate, so neighbour offsets stay in range.
	offsets := [8]int{-1, 1, -mapStride - 1, -mapStride, -mapStride + 1,
		mapStride - 1, mapStride, mapStride + 1}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, o := range offsets {
			if q := p + o; emap[q] == mapCandidate {
				emap[q] = mapEdge
				stack = append(stack, q)
			}
		}
	}

	out := &Gray{Width: w, Height: h, Pix: make([]uint8, w*h)}
	for y := 0; y < h; y++ {
		mrow := emap[(y+1)*mapStride+1 : (y+1)*mapStride+1+w]
		orow := out.Pix[y*w : (y+1)*w]
		for x, s := range mrow {
			if s == mapEdge {
				orow[x] = 255
			}
		}
	}
	return out, nil
}

// isLocalMax is OpenCV's non-maximum suppression test for magnitude m with
// gradient (xs, ys). p, c and n are the magnitudes of columns x-1..x+1 in
// the previous, current and next rows. The direction is bucketed without
// division: |dy|·2^15 against |dx|·tan(22.5°)·2^15 and |dx|·tan(67.5°)·2^15
// (tan 67.5° = tan 22.5° + 2). Along each direction one neighbour must be
// strictly smaller and the other only not larger, so a plateau keeps
// exactly one pixel; diagonals demand strictly smaller on both sides.
func isLocalMax(m, xs, ys int32, p, c, n []int32) bool {
	ax, ay := abs32(xs), abs32(ys)<<cannyShift
	tg22x := ax * tg22
	if ay < tg22x { // near horizontal gradient: compare left and right
		return m > c[0] && m >= c[2]
	}
	tg67x := tg22x + ax<<(cannyShift+1)
	if ay > tg67x { // near vertical gradient: compare above and below
		return m > p[1] && m >= n[1]
	}
	// Diagonal: with dx and dy of the same sign the gradient runs from
	// top-left to bottom-right (y grows downwards).
	if (xs ^ ys) < 0 {
		return m > p[2] && m > n[0]
	}
	return m > p[0] && m > n[2]
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

// sobelRow computes row y of the 3×3 Sobel derivatives with replicated
// borders (cv2.Canny passes BORDER_REPLICATE to Sobel) and the L1
// magnitude into mag[1:w+1], leaving mag[0] and mag[w+1] zero.
//
//	dx = [-1 0 1] horizontally, [1 2 1] vertically; dy is its transpose.
func sobelRow(g *Gray, y int, dx, dy []int16, mag []int32) {
	w, h := g.Width, g.Height
	up := g.Pix[max(y-1, 0)*w : max(y-1, 0)*w+w]
	mid := g.Pix[y*w : y*w+w]
	dn := g.Pix[min(y+1, h-1)*w : min(y+1, h-1)*w+w]
	for x := 0; x < w; x++ {
		l, r := max(x-1, 0), min(x+1, w-1)
		gx := (int32(up[r]) + 2*int32(mid[r]) + int32(dn[r])) -
			(int32(up[l]) + 2*int32(mid[l]) + int32(dn[l]))
		gy := (int32(dn[l]) + 2*int32(dn[x]) + int32(dn[r])) -
			(int32(up[l]) + 2*int32(up[x]) + int32(up[r]))
		dx[x], dy[x] = int16(gx), int16(gy)
		mag[x+1] = abs32(gx) + abs32(gy)
	}
	mag[0], mag[w+1] = 0, 0
}

// CannyRGB is the control-image preprocessing of the diffusers ControlNet
// examples with the grey conversion made explicit: RGB -> grey (ToGray) ->
// Canny -> edges replicated to three channels.
func CannyRGB(m *RGB, low, high int) (*RGB, error) {
	g, err := ToGray(m)
	if err != nil {
		return nil, fmt.Errorf("imageproc: canny: %w", err)
	}
	e, err := Canny(g, low, high)
	if err != nil {
		return nil, fmt.Errorf("imageproc: canny: %w", err)
	}
	return e.ToRGB()
}
