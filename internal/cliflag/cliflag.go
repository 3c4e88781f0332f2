// Package cliflag holds the flag forms the controlfn commands share
// (compile, generate, eval, bench), so each is parsed, and refused, the same
// way everywhere.
package cliflag

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// List collects a repeatable flag, also accepting comma-separated values.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *List) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// Size is an image size in pixels.
type Size struct{ Width, Height int }

// ParseSizes reads WxH[,WxH...]: positive multiples of 8.
func ParseSizes(s string) ([]Size, error) {
	var out []Size
	for _, f := range strings.Split(s, ",") {
		w, h, ok := strings.Cut(strings.TrimSpace(f), "x")
		wi, err1 := strconv.Atoi(w)
		hi, err2 := strconv.Atoi(h)
		if !ok || err1 != nil || err2 != nil || wi <= 0 || hi <= 0 || wi%8 != 0 || hi%8 != 0 {
			return nil, fmt.Errorf("size %q: want WxH with positive multiples of 8, e.g. 512x512", f)
		}
		out = append(out, Size{wi, hi})
	}
	return out, nil
}

// LoRA is a --lora FILE[:SCALE] value.
type LoRA struct {
	Path  string
	Scale float64
}

// ParseLoRA reads FILE[:SCALE] (scale 1 when absent); a suffix that is not
// a number belongs to the file name (a Windows drive, a colon in it).
func ParseLoRA(spec string) (LoRA, error) {
	path, scale := spec, 1.0
	if i := strings.LastIndex(spec, ":"); i > 0 {
		if v, err := strconv.ParseFloat(spec[i+1:], 64); err == nil {
			path, scale = spec[:i], v
		}
	}
	if math.IsNaN(scale) || math.IsInf(scale, 0) {
		return LoRA{}, fmt.Errorf("--lora %q: the scale must be a finite number", spec)
	}
	if path == "" {
		return LoRA{}, fmt.Errorf("--lora %q: want FILE[:SCALE]", spec)
	}
	return LoRA{Path: path, Scale: scale}, nil
}
