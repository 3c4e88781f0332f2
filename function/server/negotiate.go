package server

import (
	"strconv"
	"strings"
)

// output is the form of a successful generate response.
type output int

const (
	outJSON  output = iota
	outPNG          // the first image, as PNG
	outJPEG         // the first image, as JPEG
	outImage        // the first image, in the request's output_format
)

// offers are the media types the generate route can produce, in the
// order that breaks ties: JSON carries everything, so it wins a tie.
var offers = [...]struct {
	typ string
	out output
}{{"application/json", outJSON}, {"image/png", outPNG}, {"image/jpeg", outJPEG}}

// negotiate picks the response form from the Accept header values (RFC
// 9110, 12.5.1): the offer with the highest q, then the most specific
// matching range, so that "image/png, */*" gets PNG. Equal PNG and JPEG
// (image/*) leave the choice to output_format. ok is false when every
// offer has q=0. No header means JSON.
func negotiate(accept []string) (out output, ok bool) {
	ranges := parseAccept(accept)
	if len(ranges) == 0 {
		return outJSON, true
	}
	type score struct {
		q    float64
		spec int
	}
	var scores [len(offers)]score
	for i, o := range offers {
		scores[i] = score{0, -1}
		typ, sub, _ := strings.Cut(o.typ, "/")
		for _, r := range ranges {
			spec := r.matches(typ, sub)
			if spec > scores[i].spec {
				scores[i] = score{r.q, spec}
			}
		}
	}
	best := 0
	for i := 1; i < len(offers); i++ {
		if s, b := scores[i], scores[best]; s.q > b.q || s.q == b.q && s.spec > b.spec {
			best = i
		}
	}
	if scores[best].q <= 0 {
		return 0, false
	}
	if out := offers[best].out; out != outJSON {
		if scores[1] == scores[2] {
			return outImage, true
		}
		return out, true
	}
	return outJSON, true
}

type mediaRange struct {
	typ, sub string
	q        float64
}

// matches returns how specifically r matches typ/sub: 2 exact, 1 type/*,
// 0 */*, -1 not at all.
func (r mediaRange) matches(typ, sub string) int {
	switch {
	case r.typ == "*" && r.sub == "*":
		return 0
	case r.typ != typ:
		return -1
	case r.sub == "*":
		return 1
	case r.sub == sub:
		return 2
	}
	return -1
}

// parseAccept reads media ranges; a malformed one is skipped, as if the
// client had not sent it.
func parseAccept(values []string) []mediaRange {
	var out []mediaRange
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			params := strings.Split(part, ";")
			typ, sub, ok := strings.Cut(strings.ToLower(strings.TrimSpace(params[0])), "/")
			if !ok || typ == "" || sub == "" || typ == "*" && sub != "*" {
				continue
			}
			r := mediaRange{typ: typ, sub: sub, q: 1}
			for _, p := range params[1:] {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil || q < 0 || q > 1 {
						ok = false
					}
					r.q = q
				}
			}
			if ok {
				out = append(out, r)
			}
		}
	}
	return out
}
