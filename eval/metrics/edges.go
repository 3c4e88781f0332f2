package metrics

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/imageproc"
)

// EdgeThreshold is the grey level from which a pixel of an edge map is an
// edge. Canny maps hold 0 and 255; control maps that were resized hold
// intermediate values along their lines, and half-way keeps a line's core
// without the faint halo (or ringing) resampling adds.
const EdgeThreshold = 128

// MaxEdgeTolerance bounds the tolerance radius EdgeF1 accepts: beyond a
// few pixels an edge match means little, and the cost grows with r².
const MaxEdgeTolerance = 16

// EdgeScore is the agreement of a predicted edge map with a target one.
type EdgeScore struct {
	// Precision is the fraction of predicted edge pixels with a target
	// edge pixel within the tolerance; Recall the fraction of target edge
	// pixels with a predicted one within it.
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	// F1 is their harmonic mean, 2PR/(P+R), 0 when both are 0.
	F1 float64 `json:"f1"`
	// Predicted and Target count the edge pixels of each map.
	Predicted int `json:"predicted_pixels"`
	Target    int `json:"target_pixels"`
}

// EdgeF1 scores a predicted edge map (Canny of a generated image) against
// a target (the control map), as ControlNet++ measures Canny control, with
// a tolerance: a predicted edge pixel is correct when a target edge pixel
// lies within Euclidean distance tolerance of it (dx² + dy² ≤ tolerance²),
// and a target edge pixel is found when a predicted one lies within it.
// Tolerance 0 is exact pixel agreement. Matching is by distance only, not
// one-to-one as in the BSDS benchmark, so two parallel predicted lines
// around one target line both count as correct.
//
// Pixels at or above EdgeThreshold are edges. The empty cases are defined
// so that agreement scores 1 and disagreement 0: two blank maps give
// P = R = F1 = 1; a blank map against a non-blank one gives 0 for all
// three (a precision or recall of 0/0 is taken as 0).
func EdgeF1(pred, target *imageproc.Gray, tolerance int) (EdgeScore, error) {
	if err := sameSizeGray(pred, target); err != nil {
		return EdgeScore{}, err
	}
	if tolerance < 0 || tolerance > MaxEdgeTolerance {
		return EdgeScore{}, fmt.Errorf("metrics: edge tolerance %d out of range [0, %d]", tolerance, MaxEdgeTolerance)
	}
	disk := diskOffsets(tolerance)
	hits, np := matched(pred, target, disk)
	found, nt := matched(target, pred, disk)
	s := EdgeScore{Predicted: np, Target: nt}
	if np == 0 && nt == 0 {
		s.Precision, s.Recall, s.F1 = 1, 1, 1
		return s, nil
	}
	if np > 0 {
		s.Precision = float64(hits) / float64(np)
	}
	if nt > 0 {
		s.Recall = float64(found) / float64(nt)
	}
	if s.Precision+s.Recall > 0 {
		s.F1 = 2 * s.Precision * s.Recall / (s.Precision + s.Recall)
	}
	return s, nil
}

// matched counts the edge pixels of a and how many of them have an edge
// pixel of b at one of the offsets.
func matched(a, b *imageproc.Gray, disk [][2]int) (hits, edges int) {
	w, h := a.Width, a.Height
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if a.Pix[y*w+x] < EdgeThreshold {
				continue
			}
			edges++
			for _, d := range disk {
				xx, yy := x+d[0], y+d[1]
				if xx >= 0 && xx < w && yy >= 0 && yy < h && b.Pix[yy*w+xx] >= EdgeThreshold {
					hits++
					break
				}
			}
		}
	}
	return hits, edges
}

// diskOffsets lists the offsets within Euclidean distance r, nearest
// first so that a match is usually found after a few probes.
func diskOffsets(r int) [][2]int {
	var out [][2]int
	for d2 := 0; d2 <= r*r; d2++ {
		for dy := -r; dy <= r; dy++ {
			for dx := -r; dx <= r; dx++ {
				if dx*dx+dy*dy == d2 {
					out = append(out, [2]int{dx, dy})
				}
			}
		}
	}
	return out
}

// Binarize returns a 0/255 map of the pixels of g at or above threshold:
// how a control map drawn or resized with grey levels becomes the set of
// edge pixels EdgeF1 counts.
func Binarize(g *imageproc.Gray, threshold uint8) (*imageproc.Gray, error) {
	if g == nil || g.Width <= 0 || g.Height <= 0 || len(g.Pix) != g.Width*g.Height {
		return nil, fmt.Errorf("metrics: malformed grey image")
	}
	out := &imageproc.Gray{Width: g.Width, Height: g.Height, Pix: make([]uint8, len(g.Pix))}
	for i, v := range g.Pix {
		if v >= threshold {
			out.Pix[i] = 255
		}
	}
	return out, nil
}
