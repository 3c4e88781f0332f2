package tokenizer

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxFixPasses bounds ftfy's repeat-until-unchanged loop. Real text settles
// in two or three passes (one per level of nested escaping, as in
// "&amp;amp;"); the bound keeps hostile input linear.
const maxFixPasses = 16

// fixPiece applies ftfy.fix_and_explain's loop, with the fixers this package
// covers, to one word of a segment. Each pass runs them in ftfy's order:
// unescape_html, (fix_encoding: not covered), fix_c1_controls,
// fix_latin_ligatures, fix_character_width, uncurl_quotes, (fix_line_breaks:
// only rewrites whitespace into whitespace), (fix_surrogates: Go strings hold
// none), remove_terminal_escapes, remove_control_chars, NFC.
func fixPiece(s string, unescape bool) string {
	if plainASCII(s, unescape) {
		return s
	}
	normalized := false // s is the output of nfc
	for range maxFixPasses {
		fixed := s
		if unescape {
			fixed = unescapeHTML(fixed)
		}
		fixed = translateChars(fixed)
		fixed = removeEscapesAndControls(fixed)
		// NFC is idempotent: nothing new to normalize, nothing will change.
		if normalized && fixed == s {
			break
		}
		fixed = nfc(fixed)
		normalized = true
		if fixed == s {
			break
		}
		s = fixed
	}
	return s
}

// plainASCII reports text no fixer changes: printable ASCII, without '&'
// when entities are being decoded.
func plainASCII(s string, unescape bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '&' && unescape {
			return false
		}
	}
	return true
}

// unescapeHTML is ftfy's unescape_html: every match of
// &#?[0-9A-Za-z]{1,24}; is replaced by what it names, if anything.
func unescapeHTML(s string) string {
	i := strings.IndexByte(s, '&')
	if i < 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for {
		if n := entityLen(s[i:]); n > 0 {
			if text, ok := decodeEntity(s[i : i+n]); ok {
				b.WriteString(s[last:i])
				b.WriteString(text)
				last = i + n
			}
			i += n
		} else {
			i++
		}
		j := strings.IndexByte(s[i:], '&')
		if j < 0 {
			break
		}
		i += j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// entityLen returns the length of the match of &#?[0-9A-Za-z]{1,24}; at the
// start of s (which starts with '&'), or 0.
func entityLen(s string) int {
	k := 1
	if k < len(s) && s[k] == '#' {
		k++
	}
	j := k
	for j < len(s) && isASCIIAlnum(s[j]) {
		j++
		if j-k > 24 {
			return 0
		}
	}
	if j == k || j >= len(s) || s[j] != ';' {
		return 0
	}
	return j + 1
}

func isASCIIAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// decodeEntity is ftfy's _unescape_fixup for one matched entity: a name in
// ftfy's HTML_ENTITIES table, or a numeric reference that Python's
// html.unescape decodes completely (its result holds no ';').
func decodeEntity(ent string) (string, bool) {
	if i, ok := slices.BinarySearchFunc(htmlEntities[:], ent, func(e entityEntry, name string) int {
		return strings.Compare(e.name, name)
	}); ok {
		return htmlEntities[i].text, true
	}
	if !strings.HasPrefix(ent, "&#") {
		return "", false
	}
	body := ent[2 : len(ent)-1]
	digits, base := body, 10
	if body[0] == 'x' || body[0] == 'X' {
		digits, base = body[1:], 16
	}
	// html.unescape only decodes the whole reference when the digits run to
	// the ';'; otherwise part of the text, ';' included, survives and ftfy
	// keeps the entity as written.
	if digits == "" {
		return "", false
	}
	num := 0
	for i := 0; i < len(digits); i++ {
		d := digitValue(digits[i])
		if d >= base {
			return "", false
		}
		num = min(num*base+d, unicode.MaxRune+1) // saturate: beyond is all U+FFFD
	}
	text := charref(num)
	if strings.Contains(text, ";") {
		return "", false
	}
	return text, true
}

func digitValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return 99
}

// charref is what Python's html.unescape makes of a numeric reference.
func charref(num int) string {
	for _, e := range invalidCharrefs {
		if e.num == num {
			return e.text
		}
	}
	if 0xD800 <= num && num <= 0xDFFF || num > unicode.MaxRune {
		return "\uFFFD"
	}
	if inRanges(invalidCodepoints[:], rune(num)) {
		return ""
	}
	return string(rune(num))
}

// translateChars applies ftfy's per-character fixers in their order:
// fix_c1_controls (C1 controls as Windows-1252), fix_latin_ligatures,
// fix_character_width and uncurl_quotes. Each maps characters one at a time,
// so running the chain per character equals running them one after another.
func translateChars(s string) string {
	for i, r := range s {
		if r >= 0x80 && translatable(r) {
			b := make([]byte, 0, len(s)+8)
			b = append(b, s[:i]...)
			for _, r := range s[i:] {
				b = appendTranslated(b, r)
			}
			return string(b)
		}
	}
	return s
}

func translatable(r rune) bool {
	return r <= 0x9f || ligature(r) != "" || r == 0x3000 || r >= 0xff01 && r <= 0xffef ||
		r == 0x2bc || r >= 0x2018 && r <= 0x201f
}

func appendTranslated(b []byte, r rune) []byte {
	if r >= 0x80 && r <= 0x9f {
		r = c1Map[r-0x80]
	}
	if lig := ligature(r); lig != "" {
		for _, r := range lig {
			b = appendWidthQuotes(b, r)
		}
		return b
	}
	return appendWidthQuotes(b, r)
}

func appendWidthQuotes(b []byte, r rune) []byte {
	if r == 0x3000 || r >= 0xff01 && r <= 0xffef {
		if i, ok := slices.BinarySearchFunc(widthMap[:], r, func(e widthEntry, r rune) int {
			return int(e.r - r)
		}); ok {
			for _, r := range widthMap[i].text {
				b = utf8.AppendRune(b, uncurl(r))
			}
			return b
		}
	}
	return utf8.AppendRune(b, uncurl(r))
}

// uncurl is ftfy's uncurl_quotes for one character.
func uncurl(r rune) rune {
	switch {
	case r == 0x2bc || r >= 0x2018 && r <= 0x201b:
		return '\''
	case r >= 0x201c && r <= 0x201f:
		return '"'
	}
	return r
}

// ligature is ftfy's LIGATURES table: Latin ligatures and digraphs that are
// copy-and-paste artifacts, spelled out.
func ligature(r rune) string {
	switch r {
	case 'Ĳ':
		return "IJ"
	case 'ĳ':
		return "ij"
	case 'ŉ':
		return "ʼn"
	case 'Ǳ':
		return "DZ"
	case 'ǲ':
		return "Dz"
	case 'ǳ':
		return "dz"
	case 'Ǆ':
		return "DŽ"
	case 'ǅ':
		return "Dž"
	case 'ǆ':
		return "dž"
	case 'Ǉ':
		return "LJ"
	case 'ǈ':
		return "Lj"
	case 'ǉ':
		return "lj"
	case 'Ǌ':
		return "NJ"
	case 'ǋ':
		return "Nj"
	case 'ǌ':
		return "nj"
	case 'ﬀ':
		return "ff"
	case 'ﬁ':
		return "fi"
	case 'ﬂ':
		return "fl"
	case 'ﬃ':
		return "ffi"
	case 'ﬄ':
		return "ffl"
	case 'ﬅ':
		return "ſt"
	case 'ﬆ':
		return "st"
	}
	return ""
}

// removeEscapesAndControls is ftfy's remove_terminal_escapes followed by
// remove_control_chars, in one scan: an escape sequence only starts at ESC,
// which the second step would drop anyway, so the order is kept.
func removeEscapesAndControls(s string) string {
	keep := func(i int) (int, bool) {
		if s[i] == 0x1b {
			if n := ansiLen(s[i:]); n > 0 {
				return n, false
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		return size, !removedControl(r)
	}
	for i := 0; i < len(s); {
		n, ok := keep(i)
		if ok {
			i += n
			continue
		}
		b := make([]byte, 0, len(s))
		b = append(b, s[:i]...)
		for i += n; i < len(s); i += n {
			if n, ok = keep(i); ok {
				b = append(b, s[i:i+n]...)
			}
		}
		return string(b)
	}
	return s
}

// ansiLen returns the length of the match of \x1b\[(?:\d|;)*[a-zA-Z] at the
// start of s, or 0. \d is any Unicode decimal digit, as in Python's re.
func ansiLen(s string) int {
	if len(s) < 3 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	for i := 2; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == ';' || unicode.IsDigit(r):
			i += size
		case r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'):
			return i + 1
		default:
			return 0
		}
	}
	return 0
}

// removedControl is ftfy's CONTROL_CHARS: control characters with no
// displayed effect. Tab, LF, FF and CR stay.
func removedControl(r rune) bool {
	return r <= 0x08 || r == 0x0b || 0x0e <= r && r <= 0x1f || r == 0x7f ||
		0x206a <= r && r <= 0x206f || r == 0xfeff || 0xfff9 <= r && r <= 0xfffc
}
