package imageproc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestToGray(t *testing.T) {
	tests := []struct {
		rgb  [3]uint8
		want uint8
	}{
		{[3]uint8{0, 0, 0}, 0},
		{[3]uint8{255, 255, 255}, 255},
		{[3]uint8{255, 0, 0}, 76},
		{[3]uint8{0, 255, 0}, 150},
		{[3]uint8{0, 0, 255}, 29},
		// Exact luma 45.5000 and 98.5010: the 15-bit weights of OpenCV 4
		// round these to 46 and 98; the 14-bit weights of OpenCV 2/3 give
		// 45 and 99. Both pixels occur in the golden images.
		{[3]uint8{64, 42, 15}, 46},
		{[3]uint8{0, 121, 241}, 98},
	}
	for _, tt := range tests {
		g, err := ToGray(&RGB{Width: 1, Height: 1, Pix: tt.rgb[:]})
		if err != nil {
			t.Fatal(err)
		}
		if g.Pix[0] != tt.want {
			t.Errorf("gray%v = %d, want %d", tt.rgb, g.Pix[0], tt.want)
		}
	}
}

// grayFrom builds a Gray from rows of '.' (0), 'w' (weak: 30) and '#'
// (255).
func grayFrom(rows ...string) *Gray {
	g := &Gray{Width: len(rows[0]), Height: len(rows)}
	for _, r := range rows {
		for _, c := range r {
			switch c {
			case '#':
				g.Pix = append(g.Pix, 255)
			case 'w':
				g.Pix = append(g.Pix, 30)
			default:
				g.Pix = append(g.Pix, 0)
			}
		}
	}
	return g
}

// edgeRows renders an edge map as rows of '.' and 'X' for readable diffs.
func edgeRows(g *Gray) []string {
	var rows []string
	for y := 0; y < g.Height; y++ {
		var b strings.Builder
		for _, v := range g.Pix[y*g.Width : (y+1)*g.Width] {
			switch v {
			case 0:
				b.WriteByte('.')
			case 255:
				b.WriteByte('X')
			default:
				fmt.Fprintf(&b, "(%d)", v)
			}
		}
		rows = append(rows, b.String())
	}
	return rows
}

func TestCanny(t *testing.T) {
	tests := []struct {
		name      string
		img       *Gray
		low, high int
		want      []string
	}{
		{"flat", grayFrom("####", "####", "####"), 1, 2,
			[]string{"....", "....", "...."}},
		// A vertical step gives two columns of equal magnitude 1020; the
		// tie rule (> left, >= right) keeps the left one only. Borders
		// are replicated, so the edge runs to the first and last row.
		{"vertical step", grayFrom("...###", "...###", "...###"), 100, 200,
			[]string{"..X...", "..X...", "..X..."}},
		// Same for a horizontal step: > above, >= below keeps the top row.
		{"horizontal step", grayFrom("....", "....", "####", "####"), 100, 200,
			[]string{"....", "X" + "XXX", "....", "...."}},
		// Thresholds are strict: magnitude 1020 is not > 1020.
		{"magnitude equals high", grayFrom("..##", "..##"), 100, 1020,
			[]string{"....", "...."}},
		{"magnitude just above high", grayFrom("..##", "..##"), 100, 1019,
			[]string{".X..", ".X.."}},
		{"thresholds swapped as cv2 does", grayFrom("..##", "..##"), 1019, 100,
			[]string{".X..", ".X.."}},
		// A weak step (magnitude 120) alone is no edge ...
		{"weak only", grayFrom("..ww", "..ww", "..ww", "..ww"), 100, 200,
			[]string{"....", "....", "....", "...."}},
		// ... but hysteresis extends a strong edge along it. Where the
		// strong and weak rows meet the gradients turn diagonal (worked by
		// hand: row 0 has magnitudes 0, 1020, 1470, 900; (2,0) and (2,1)
		// win the diagonal test, (3,0) the vertical one by the >= tie),
		// and the 8-connected walk carries the edge down column 1, whose
		// magnitude 120 is only above the low threshold.
		{"weak joined to strong", grayFrom("..##", "..ww", "..ww", "..ww", "..ww"), 100, 200,
			[]string{"..XX", "..X.", ".X..", ".X..", ".X.."}},
		{"single pixel", grayFrom("#"), 0, 0, []string{"."}},
		{"single row", grayFrom("..##"), 100, 200, []string{".X.."}},
		{"single column", grayFrom(".", ".", "#", "#"), 100, 200, []string{".", "X", ".", "."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canny(tt.img, tt.low, tt.high)
			if err != nil {
				t.Fatal(err)
			}
			if g := edgeRows(got); !slices.Equal(g, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(g, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestCannyErrors(t *testing.T) {
	for _, g := range []*Gray{nil, {Width: 0, Height: 3}, {Width: 2, Height: 2, Pix: make([]uint8, 3)}} {
		if _, err := Canny(g, 1, 2); err == nil {
			t.Errorf("Canny(%+v): no error", g)
		}
	}
}

func TestCannyRGBReplicates(t *testing.T) {
	m, err := grayFrom("...###", "...###").ToRGB()
	if err != nil {
		t.Fatal(err)
	}
	e, err := CannyRGB(m, 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(e.Pix); i += 3 {
		if e.Pix[i] != e.Pix[i+1] || e.Pix[i] != e.Pix[i+2] {
			t.Fatalf("pixel %d not grey: %v", i/3, e.Pix[i:i+3])
		}
	}
	if got := channel0(e); !slices.Equal(got, []uint8{0, 0, 255, 0, 0, 0, 0, 0, 255, 0, 0, 0}) {
		t.Errorf("edges %v", got)
	}
}
