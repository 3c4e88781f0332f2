package tokenizer

import (
	"slices"
	"unicode/utf8"
)

// Table entry types of tables.go.
type (
	cccRange struct {
		lo, hi rune
		ccc    uint8
	}
	decompEntry struct {
		r      rune
		off, n uint16 // decompPool[off : off+n]
	}
	composeEntry struct{ first, second, composite rune }
	runeRange    struct{ lo, hi rune }
	widthEntry   struct {
		r    rune
		text string
	}
	entityEntry  struct{ name, text string }
	charrefEntry struct {
		num  int
		text string
	}
)

// Hangul syllables decompose and compose by arithmetic (Unicode 3.12).
const (
	hangulS      = 0xAC00
	hangulL      = 0x1100
	hangulV      = 0x1161
	hangulT      = 0x11A7
	hangulLCount = 19
	hangulVCount = 21
	hangulTCount = 28
	hangulNCount = hangulVCount * hangulTCount
	hangulSCount = hangulLCount * hangulNCount
)

// nfc returns the Unicode Normalization Form C of s, as Python's
// unicodedata.normalize("NFC", s) with Unicode 14.0.0 data.
func nfc(s string) string {
	if !mayChangeUnderNFC(s) {
		return s
	}
	// Canonical decomposition, with each character's combining class.
	var d []classed
	for _, r := range s {
		d = appendDecomposed(d, r)
	}
	// Canonical ordering: a stable sort of each run of non-starters by
	// combining class.
	for i := 0; i < len(d); {
		if d[i].class == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(d) && d[j].class != 0 {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(d[i:j], func(a, b classed) int { return int(a.class) - int(b.class) })
		}
		i = j
	}
	// Canonical composition: each character joins the last starter unless a
	// character of equal or higher class, or a starter, stands between.
	out := d[:0]
	starter := -1
	lastClass := 0 // class of the last character kept after the starter; 0: none
	for _, c := range d {
		class := int(c.class)
		if starter >= 0 && (lastClass == 0 || lastClass < class) {
			if r, ok := compose(out[starter].r, c.r); ok {
				out[starter].r = r
				continue
			}
		}
		if class == 0 {
			starter = len(out)
		}
		lastClass = class
		out = append(out, c)
	}
	b := make([]byte, 0, len(s))
	for _, c := range out {
		b = utf8.AppendRune(b, c.r)
	}
	return string(b)
}

// classed is a character with its canonical combining class.
type classed struct {
	r     rune
	class uint8
}

// mayChangeUnderNFC is the NFC quick check: text with no character of a
// non-zero class, NFC_QC=No or NFC_QC=Maybe is already normalized.
func mayChangeUnderNFC(s string) bool {
	for i := 0; i < len(s); i++ {
		// Every code point below U+0300 is stable, and a UTF-8 lead byte
		// below 0xCC starts one.
		if s[i] < 0xCC {
			continue
		}
		r, _ := utf8.DecodeRuneInString(s[i:])
		if inRanges(nfcUnstable[:], r) {
			return true
		}
	}
	return false
}

func appendDecomposed(d []classed, r rune) []classed {
	if r < 0xC0 {
		return append(d, classed{r, 0})
	}
	if si := r - hangulS; si >= 0 && si < hangulSCount {
		d = append(d, classed{hangulL + si/hangulNCount, 0}, classed{hangulV + (si%hangulNCount)/hangulTCount, 0})
		if t := si % hangulTCount; t != 0 {
			d = append(d, classed{hangulT + t, 0})
		}
		return d
	}
	if i, ok := slices.BinarySearchFunc(decompIndex[:], r, func(e decompEntry, r rune) int {
		return int(e.r - r)
	}); ok {
		e := decompIndex[i]
		for _, r := range decompPool[e.off : e.off+e.n] {
			d = append(d, classed{r, ccc(r)})
		}
		return d
	}
	return append(d, classed{r, ccc(r)})
}

func compose(a, b rune) (rune, bool) {
	if li := a - hangulL; li >= 0 && li < hangulLCount {
		if vi := b - hangulV; vi >= 0 && vi < hangulVCount {
			return hangulS + (li*hangulVCount+vi)*hangulTCount, true
		}
	}
	if si := a - hangulS; si >= 0 && si < hangulSCount && si%hangulTCount == 0 {
		if ti := b - hangulT; ti > 0 && ti < hangulTCount {
			return a + ti, true
		}
	}
	i, ok := slices.BinarySearchFunc(composePairs[:], [2]rune{a, b}, func(e composeEntry, k [2]rune) int {
		if e.first != k[0] {
			return int(e.first - k[0])
		}
		return int(e.second - k[1])
	})
	if !ok {
		return 0, false
	}
	return composePairs[i].composite, true
}

// ccc returns the canonical combining class of r.
func ccc(r rune) uint8 {
	if r < 0x300 {
		return 0
	}
	i, ok := slices.BinarySearchFunc(cccRanges[:], r, func(e cccRange, r rune) int {
		switch {
		case e.hi < r:
			return -1
		case e.lo > r:
			return 1
		}
		return 0
	})
	if !ok {
		return 0
	}
	return cccRanges[i].ccc
}

// inRanges reports whether r lies in one of the sorted, disjoint ranges.
func inRanges(ranges []runeRange, r rune) bool {
	_, ok := slices.BinarySearchFunc(ranges, r, func(e runeRange, r rune) int {
		switch {
		case e.hi < r:
			return -1
		case e.lo > r:
			return 1
		}
		return 0
	})
	return ok
}
