package eval

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// Control is one control map the evaluation conditions on.
type Control struct {
	// Name identifies the map in the report: a built-in name, or the
	// file name (with its extension, so it never collides with one).
	Name string
	// Source is "builtin" or the file the map was read from.
	Source string
	// Map is the control image at the evaluation size: light edges on
	// black, given to the ControlNet as it is (control_type "none").
	Map *imageproc.RGB
}

// The built-in control maps, in report order.
const (
	MapCircles = "circles"
	MapBoxes   = "boxes"
	MapLines   = "lines"
	MapGrid    = "grid"
)

// BuiltinNames returns the names of the built-in control maps.
func BuiltinNames() []string { return []string{MapCircles, MapBoxes, MapLines, MapGrid} }

// BuiltinControls draws the named built-in maps (all of them when names is
// empty) at width×height: one-pixel white edges on black, placed in
// proportion to the size so every size shows the same scene.
func BuiltinControls(width, height int, names ...string) ([]Control, error) {
	if width < 8 || height < 8 {
		return nil, fmt.Errorf("eval: control map size %dx%d: want at least 8x8", width, height)
	}
	if len(names) == 0 {
		names = BuiltinNames()
	}
	var out []Control
	for _, name := range names {
		g, err := imageproc.NewGray(width, height)
		if err != nil {
			return nil, fmt.Errorf("eval: control map: %w", err)
		}
		c := canvas{g}
		switch name {
		case MapCircles:
			drawCircles(c)
		case MapBoxes:
			drawBoxes(c)
		case MapLines:
			drawLines(c)
		case MapGrid:
			drawGrid(c)
		default:
			return nil, fmt.Errorf("eval: no built-in control map %q (have %s)", name, strings.Join(BuiltinNames(), ", "))
		}
		rgb, err := g.ToRGB()
		if err != nil {
			return nil, fmt.Errorf("eval: control map %s: %w", name, err)
		}
		out = append(out, Control{Name: name, Source: "builtin", Map: rgb})
	}
	return out, nil
}

// LoadControls reads every PNG in dir (sorted by name) as a control map and
// resizes it to width×height with Lanczos, as the pipeline would.
func LoadControls(dir string, width, height int) ([]Control, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("eval: controls: %w", err)
	}
	var out []Control
	for _, e := range entries {
		if e.IsDir() || !strings.EqualFold(filepath.Ext(e.Name()), ".png") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("eval: controls: %w", err)
		}
		m, err := imageproc.Decode(data, 0)
		if err != nil {
			return nil, fmt.Errorf("eval: control %s: %w", path, err)
		}
		if m.Width != width || m.Height != height {
			if m, err = imageproc.Resize(m, width, height, imageproc.Lanczos); err != nil {
				return nil, fmt.Errorf("eval: control %s: %w", path, err)
			}
		}
		out = append(out, Control{Name: e.Name(), Source: path, Map: m})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: controls: no PNG files in %s", dir)
	}
	slices.SortFunc(out, func(a, b Control) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// encodePNG encodes an RGB image losslessly.
func encodePNG(m *imageproc.RGB) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, m.Image()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// canvas draws one-pixel white strokes on a grey image, clipping at its
// edges.
type canvas struct{ g *imageproc.Gray }

func (c canvas) set(x, y int) {
	if x >= 0 && y >= 0 && x < c.g.Width && y < c.g.Height {
		c.g.Pix[y*c.g.Width+x] = 255
	}
}

// at scales fractions of the size to pixels.
func (c canvas) at(fx, fy float64) (int, int) {
	return int(fx * float64(c.g.Width-1)), int(fy * float64(c.g.Height-1))
}

// side is the shorter side, which radii scale with.
func (c canvas) side() float64 { return float64(min(c.g.Width, c.g.Height)) }

// line is Bresenham's line from (x0, y0) to (x1, y1), both included.
func (c canvas) line(x0, y0, x1, y1 int) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		c.set(x0, y0)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

// circle is the midpoint circle of radius r around (cx, cy).
func (c canvas) circle(cx, cy, r int) {
	x, y, e := r, 0, 1-r
	for x >= y {
		for _, p := range [][2]int{{x, y}, {y, x}, {-y, x}, {-x, y}, {-x, -y}, {-y, -x}, {y, -x}, {x, -y}} {
			c.set(cx+p[0], cy+p[1])
		}
		y++
		if e < 0 {
			e += 2*y + 1
		} else {
			x--
			e += 2*(y-x) + 1
		}
	}
}

func (c canvas) rect(x0, y0, x1, y1 int) {
	c.line(x0, y0, x1, y0)
	c.line(x1, y0, x1, y1)
	c.line(x1, y1, x0, y1)
	c.line(x0, y1, x0, y0)
}

func drawCircles(c canvas) {
	for _, k := range []struct{ fx, fy, fr float64 }{{0.3, 0.32, 0.2}, {0.68, 0.6, 0.25}, {0.27, 0.76, 0.12}} {
		x, y := c.at(k.fx, k.fy)
		c.circle(x, y, max(2, int(k.fr*c.side())))
	}
}

func drawBoxes(c canvas) {
	for _, b := range [][4]float64{{0.1, 0.1, 0.45, 0.5}, {0.55, 0.2, 0.9, 0.85}, {0.65, 0.38, 0.8, 0.68}, {0.15, 0.62, 0.4, 0.9}} {
		x0, y0 := c.at(b[0], b[1])
		x1, y1 := c.at(b[2], b[3])
		c.rect(x0, y0, x1, y1)
	}
}

func drawLines(c canvas) {
	for _, l := range [][4]float64{{0.1, 0.2, 0.9, 0.2}, {0.8, 0.1, 0.8, 0.9}, {0.1, 0.9, 0.6, 0.3}, {0.3, 0.45, 0.9, 0.95}} {
		x0, y0 := c.at(l[0], l[1])
		x1, y1 := c.at(l[2], l[3])
		c.line(x0, y0, x1, y1)
	}
}

// drawGrid draws lines every sixth of the shorter side (at least 8 px
// apart, so a small map is not solid white).
func drawGrid(c canvas) {
	step := max(8, int(c.side())/6)
	for x := step / 2; x < c.g.Width; x += step {
		c.line(x, 0, x, c.g.Height-1)
	}
	for y := step / 2; y < c.g.Height; y += step {
		c.line(0, y, c.g.Width-1, y)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
