package eval

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/eval/metrics"
	"github.com/controlfn/controlfn/kernels/imageproc"
)

func TestBuiltinControls(t *testing.T) {
	for _, size := range [][2]int{{64, 64}, {96, 64}, {512, 512}} {
		maps, err := BuiltinControls(size[0], size[1])
		if err != nil {
			t.Fatal(err)
		}
		if len(maps) != len(BuiltinNames()) {
			t.Fatalf("%d maps, want %d", len(maps), len(BuiltinNames()))
		}
		for i, m := range maps {
			if m.Name != BuiltinNames()[i] || m.Source != "builtin" || m.Map.Width != size[0] || m.Map.Height != size[1] {
				t.Errorf("map %d: %s %s %dx%d", i, m.Name, m.Source, m.Map.Width, m.Map.Height)
			}
			edges, on := 0, 0
			for j := 0; j < len(m.Map.Pix); j += 3 {
				p := m.Map.Pix[j : j+3]
				if p[0] != p[1] || p[1] != p[2] || (p[0] != 0 && p[0] != 255) {
					t.Fatalf("%s: pixel %v is not black or white", m.Name, p)
				}
				if p[0] == 255 {
					edges++
				}
				on++
			}
			// Line drawings: some edges, mostly background.
			if edges == 0 || edges > on/4 {
				t.Errorf("%s at %v: %d of %d pixels are edges", m.Name, size, edges, on)
			}
			// The strokes are edges Canny finds again: it answers a one-pixel
			// stroke with edges beside it, up to √2 away on diagonals, so
			// within a 2-pixel tolerance.
			target, err := edgeMap(m.Map)
			if err != nil {
				t.Fatal(err)
			}
			self, err := cannyMap(m.Map, 100, 200)
			if err != nil {
				t.Fatal(err)
			}
			s, err := metrics.EdgeF1(self, target, 2)
			if err != nil {
				t.Fatal(err)
			}
			if s.F1 < 0.9 {
				t.Errorf("%s at %v: F1 of Canny(map) vs map = %.3f", m.Name, size, s.F1)
			}
		}
	}
	if _, err := BuiltinControls(64, 64, "spirals"); err == nil || !strings.Contains(err.Error(), "circles") {
		t.Errorf("unknown map: %v, want an error listing the built-in ones", err)
	}
	if _, err := BuiltinControls(4, 64); err == nil {
		t.Error("4x64: no error")
	}
}

func TestCanvasShapes(t *testing.T) {
	g, _ := imageproc.NewGray(9, 9)
	c := canvas{g}
	c.line(0, 0, 8, 8)
	for i := 0; i < 9; i++ {
		if g.Pix[i*9+i] != 255 {
			t.Errorf("diagonal misses (%d, %d)", i, i)
		}
	}
	g2, _ := imageproc.NewGray(9, 9)
	canvas{g2}.circle(4, 4, 3)
	// The midpoint circle of radius 3 passes through the four axis points.
	for _, p := range [][2]int{{7, 4}, {1, 4}, {4, 7}, {4, 1}} {
		if g2.Pix[p[1]*9+p[0]] != 255 {
			t.Errorf("circle misses %v", p)
		}
	}
	if g2.Pix[4*9+4] != 0 {
		t.Error("circle fills its centre")
	}
	// Strokes leaving the canvas are clipped, not a panic.
	canvas{g2}.line(-5, -5, 20, 3)
	canvas{g2}.circle(0, 0, 30)
}

func writePNG(t *testing.T, path string, m image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, m); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadControls(t *testing.T) {
	dir := t.TempDir()
	small := image.NewGray(image.Rect(0, 0, 32, 32))
	for i := 0; i < 32; i++ {
		small.SetGray(16, i, color.Gray{255})
	}
	writePNG(t, filepath.Join(dir, "b.png"), small)
	writePNG(t, filepath.Join(dir, "a.PNG"), image.NewGray(image.Rect(0, 0, 64, 64)))
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	maps, err := LoadControls(dir, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 2 || maps[0].Name != "a.PNG" || maps[1].Name != "b.png" {
		t.Fatalf("loaded %d maps: %+v", len(maps), maps)
	}
	for _, m := range maps {
		if m.Map.Width != 64 || m.Map.Height != 64 || m.Source != filepath.Join(dir, m.Name) {
			t.Errorf("%s: %dx%d from %s", m.Name, m.Map.Width, m.Map.Height, m.Source)
		}
	}
	// The resized line is still an edge.
	e, err := edgeMap(maps[1].Map)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range e.Pix {
		if v != 0 {
			n++
		}
	}
	if n < 64 {
		t.Errorf("resized line has %d edge pixels", n)
	}

	if _, err := LoadControls(t.TempDir(), 64, 64); err == nil {
		t.Error("empty folder: no error")
	}
	if _, err := LoadControls(filepath.Join(dir, "missing"), 64, 64); err == nil {
		t.Error("missing folder: no error")
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "x.png"), []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadControls(bad, 64, 64); err == nil || !strings.Contains(err.Error(), "x.png") {
		t.Errorf("corrupt PNG: %v, want an error naming the file", err)
	}
}

func TestReadPrompts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prompts.txt")
	if err := os.WriteFile(path, []byte("# a comment\n a house \n\nthe sky | blue\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPrompts(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "a house" || got[1] != "the sky | blue" {
		t.Errorf("ReadPrompts = %q", got)
	}
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, []byte("# nothing\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrompts(empty); err == nil {
		t.Error("no prompts: no error")
	}
	if _, err := ReadPrompts(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
	if n := len(DefaultPrompts()); n != 4 {
		t.Errorf("%d default prompts, want 4", n)
	}
}
