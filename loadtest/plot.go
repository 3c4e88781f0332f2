package loadtest

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// histBins is the histogram's bin count; with a few dozen samples more
// bins would leave most of them empty.
const histBins = 30

// WritePlot draws the report as one PNG: latency over the run with cold
// starts and errors marked, and the histogram of successful latencies
// (cold and warm stacked in their colors).
func WritePlot(w io.Writer, r *Report) error {
	warmColor := color.RGBA{R: 31, G: 119, B: 180, A: 255}
	coldColor := color.RGBA{R: 214, G: 39, B: 40, A: 255}
	errorColor := color.RGBA{R: 90, G: 90, B: 90, A: 255}
	var warm, cold, failed plotter.XYs
	var warmV, coldV []float64
	for _, p := range r.Phases {
		for _, s := range p.Samples {
			pt := plotter.XY{X: s.AtMS / 1000, Y: s.LatencyMS}
			switch {
			case !s.OK():
				failed = append(failed, pt)
			case s.Cold:
				cold, coldV = append(cold, pt), append(coldV, s.LatencyMS)
			default:
				warm, warmV = append(warm, pt), append(warmV, s.LatencyMS)
			}
		}
	}

	over := plot.New()
	over.Title.Text = fmt.Sprintf("Latency over time (%s)", r.Target)
	over.X.Label.Text = "request start (s since the run began)"
	over.Y.Label.Text = "latency (ms)"
	over.Y.Min = 0
	over.Add(plotter.NewGrid())
	for _, set := range []struct {
		name  string
		xys   plotter.XYs
		color color.Color
		shape draw.GlyphDrawer
		size  vg.Length
	}{
		{"warm", warm, warmColor, draw.CircleGlyph{}, vg.Points(2.5)},
		{"cold start", cold, coldColor, draw.PyramidGlyph{}, vg.Points(5)},
		{"error", failed, errorColor, draw.CrossGlyph{}, vg.Points(4)},
	} {
		if len(set.xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(set.xys)
		if err != nil {
			return fmt.Errorf("plotting %s samples: %w", set.name, err)
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: set.color, Radius: set.size, Shape: set.shape}
		over.Add(sc)
		over.Legend.Add(fmt.Sprintf("%s (%d)", set.name, len(set.xys)), sc)
	}
	over.Legend.Top = true
	// Room at the top for the legend, and at the right for the last point.
	xMax, yMax := 0.0, 0.0
	for _, set := range []plotter.XYs{warm, cold, failed} {
		for _, pt := range set {
			xMax, yMax = math.Max(xMax, pt.X), math.Max(yMax, pt.Y)
		}
	}
	over.X.Min, over.X.Max = 0, math.Max(xMax*1.03, 0.1)
	over.Y.Max = math.Max(yMax*1.25, 1)

	hist := plot.New()
	hist.Title.Text = "Latency histogram (successful requests)"
	hist.X.Label.Text = "latency (ms)"
	hist.Y.Label.Text = "requests"
	hist.Add(plotter.NewGrid())
	for _, h := range stackedHists(warmV, coldV, warmColor, coldColor) {
		hist.Add(h.hist)
		if h.n > 0 {
			hist.Legend.Add(fmt.Sprintf("%s (%d)", h.name, h.n), h.hist)
		}
	}
	hist.Legend.Top = true

	img := vgimg.New(vg.Points(1000), vg.Points(400))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadTop: vg.Points(8), PadBottom: vg.Points(8),
		PadLeft: vg.Points(8), PadRight: vg.Points(12)}
	plots := [][]*plot.Plot{{over, hist}}
	canvases := plot.Align(plots, tiles, dc)
	over.Draw(canvases[0][0])
	hist.Draw(canvases[0][1])
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

type namedHist struct {
	name string
	n    int
	hist *plotter.Histogram
}

// stackedHists bins warm and cold latencies on the same edges and stacks
// cold on top of warm, so that each bar's height is the total count.
func stackedHists(warm, cold []float64, warmColor, coldColor color.Color) []namedHist {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range append(append([]float64(nil), warm...), cold...) {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 1) { // nothing succeeded: an empty frame
		lo, hi = 0, 1
	}
	if hi <= lo {
		lo, hi = lo-0.5, hi+0.5
	}
	width := (hi - lo) / histBins
	count := func(vs []float64) []float64 {
		c := make([]float64, histBins)
		for _, v := range vs {
			i := min(int((v-lo)/width), histBins-1)
			c[i]++
		}
		return c
	}
	wc, cc := count(warm), count(cold)
	warmBins := make([]plotter.HistogramBin, histBins)
	totalBins := make([]plotter.HistogramBin, histBins)
	for i := range histBins {
		a, b := lo+float64(i)*width, lo+float64(i+1)*width
		warmBins[i] = plotter.HistogramBin{Min: a, Max: b, Weight: wc[i]}
		totalBins[i] = plotter.HistogramBin{Min: a, Max: b, Weight: wc[i] + cc[i]}
	}
	line := plotter.DefaultLineStyle
	line.Width = vg.Points(0.5)
	// Drawn in order: the total (in the cold color) first, warm over it,
	// so the cold share shows on top of each bar.
	return []namedHist{
		{"cold start", len(cold), &plotter.Histogram{Bins: totalBins, Width: width, FillColor: coldColor, LineStyle: line}},
		{"warm", len(warm), &plotter.Histogram{Bins: warmBins, Width: width, FillColor: warmColor, LineStyle: line}},
	}
}
