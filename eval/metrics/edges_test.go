package metrics

import (
	"testing"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// edgeMap builds a w×h map with 255 at the given (x, y) points.
func edgeMap(w, h int, pts ...[2]int) *imageproc.Gray {
	g := &imageproc.Gray{Width: w, Height: h, Pix: make([]uint8, w*h)}
	for _, p := range pts {
		g.Pix[p[1]*w+p[0]] = 255
	}
	return g
}

// vline is a vertical line at column x from row y0 to y1 inclusive.
func vline(x, y0, y1 int) [][2]int {
	var pts [][2]int
	for y := y0; y <= y1; y++ {
		pts = append(pts, [2]int{x, y})
	}
	return pts
}

func TestEdgeF1(t *testing.T) {
	const w, h = 20, 20
	line := edgeMap(w, h, vline(10, 2, 17)...)
	shifted := edgeMap(w, h, vline(11, 2, 17)...)
	blank := edgeMap(w, h)
	// Half the target found, half the prediction elsewhere: P = R = 1/2.
	half := edgeMap(w, h, append(vline(10, 2, 9), vline(3, 2, 9)...)...)
	grey := edgeMap(w, h, vline(10, 2, 17)...)
	for i := range grey.Pix {
		if grey.Pix[i] == 255 {
			grey.Pix[i] = 128 // at the threshold: still an edge
		}
	}
	faint := edgeMap(w, h, vline(10, 2, 17)...)
	for i := range faint.Pix {
		if faint.Pix[i] == 255 {
			faint.Pix[i] = 127 // below it: no edge
		}
	}
	tests := []struct {
		name         string
		pred, target *imageproc.Gray
		tol          int
		p, r, f1     float64
	}{
		{"self tol 0", line, line, 0, 1, 1, 1},
		{"self tol 2", line, line, 2, 1, 1, 1},
		{"blank prediction", blank, line, 1, 0, 0, 0},
		{"blank target", line, blank, 1, 0, 0, 0},
		{"both blank", blank, blank, 1, 1, 1, 1},
		{"shift 1 tol 1", shifted, line, 1, 1, 1, 1},
		{"shift 1 tol 0", shifted, line, 0, 0, 0, 0},
		{"half", half, line, 0, 0.5, 0.5, 0.5},
		// One point shifted diagonally by (1, 1) is √2 away.
		{"diagonal tol 1", edgeMap(w, h, [2]int{6, 6}), edgeMap(w, h, [2]int{5, 5}), 1, 0, 0, 0},
		{"diagonal tol 2", edgeMap(w, h, [2]int{6, 6}), edgeMap(w, h, [2]int{5, 5}), 2, 1, 1, 1},
		// Precision 1, recall 8/16: F1 = 2·1·0.5/1.5 = 2/3.
		{"partial", edgeMap(w, h, vline(10, 2, 9)...), line, 0, 1, 0.5, 2.0 / 3},
		{"threshold 128", grey, line, 0, 1, 1, 1},
		{"threshold 127", faint, line, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EdgeF1(tt.pred, tt.target, tt.tol)
			if err != nil {
				t.Fatal(err)
			}
			if !near(got.Precision, tt.p, 1e-12) || !near(got.Recall, tt.r, 1e-12) || !near(got.F1, tt.f1, 1e-12) {
				t.Fatalf("EdgeF1 = %+v, want P %v R %v F1 %v", got, tt.p, tt.r, tt.f1)
			}
		})
	}
}

func TestEdgeF1ShiftedLineTolerance(t *testing.T) {
	// A 2-pixel shift is caught by tolerance 2 but only partly by 1
	// (nothing within 1 px) and not at all by 0.
	line := edgeMap(30, 30, vline(10, 0, 29)...)
	shifted := edgeMap(30, 30, vline(12, 0, 29)...)
	for tol, want := range []float64{0, 0, 1} {
		got, err := EdgeF1(shifted, line, tol)
		if err != nil {
			t.Fatal(err)
		}
		if got.F1 != want {
			t.Errorf("tolerance %d: F1 = %v, want %v", tol, got.F1, want)
		}
	}
}

func TestEdgeF1Errors(t *testing.T) {
	a, b := edgeMap(4, 4), edgeMap(5, 4)
	if _, err := EdgeF1(a, b, 1); err == nil {
		t.Error("different sizes: no error")
	}
	if _, err := EdgeF1(a, nil, 1); err == nil {
		t.Error("nil: no error")
	}
	if _, err := EdgeF1(&imageproc.Gray{Width: 3, Height: 3, Pix: make([]uint8, 2)}, a, 1); err == nil {
		t.Error("malformed: no error")
	}
	for _, tol := range []int{-1, MaxEdgeTolerance + 1} {
		if _, err := EdgeF1(a, a, tol); err == nil {
			t.Errorf("tolerance %d: no error", tol)
		}
	}
}

func TestDiskOffsets(t *testing.T) {
	// Lattice points within radius r: 1, 5, 13, 29.
	for r, want := range []int{1, 5, 13, 29} {
		d := diskOffsets(r)
		if len(d) != want {
			t.Errorf("r=%d: %d offsets, want %d", r, len(d), want)
		}
		if d[0] != [2]int{0, 0} {
			t.Errorf("r=%d: first offset %v, want the centre", r, d[0])
		}
	}
}

func TestBinarize(t *testing.T) {
	g := &imageproc.Gray{Width: 4, Height: 1, Pix: []uint8{0, 127, 128, 255}}
	b, err := Binarize(g, 128)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{0, 0, 255, 255}; string(b.Pix) != string(want) {
		t.Errorf("Binarize = %v, want %v", b.Pix, want)
	}
	if _, err := Binarize(&imageproc.Gray{Width: 2, Height: 2}, 1); err == nil {
		t.Error("malformed: no error")
	}
}
