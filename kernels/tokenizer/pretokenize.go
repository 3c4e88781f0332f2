package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// nextPreToken finds the next match of CLIP's pre-split pattern at or after
// i, run with IGNORECASE:
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// Like the regex, it tries the alternatives in order at each position and
// skips positions where none matches (whitespace). Every alternative but the
// fixed strings is a single character class, so one forward scan finds each
// match: linear time, no backtracking. It returns start == end when no match
// remains.
func nextPreToken(s []byte, i int) (start, end int) {
	for i < len(s) {
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case isSpace(r):
			i += size
			continue
		case r == '<':
			if n := matchFold(s[i:], startOfText); n > 0 {
				return i, i + n
			}
			if n := matchFold(s[i:], endOfText); n > 0 {
				return i, i + n
			}
		case r == '\'':
			for _, c := range contractions {
				if n := matchFold(s[i+1:], c); n > 0 {
					return i, i + 1 + n
				}
			}
		case unicode.IsLetter(r):
			j := i + size
			for j < len(s) {
				r, size := utf8.DecodeRune(s[j:])
				if !unicode.IsLetter(r) {
					break
				}
				j += size
			}
			return i, j
		case unicode.IsNumber(r):
			return i, i + size
		}
		// [^\s\p{L}\p{N}]+: also where '<' or '\'' began no longer match.
		j := i + size
		for j < len(s) {
			r, size := utf8.DecodeRune(s[j:])
			if isSpace(r) || unicode.IsLetter(r) || unicode.IsNumber(r) {
				break
			}
			j += size
		}
		return i, j
	}
	return len(s), len(s)
}

// contractions are the pattern's suffixes after "'", in pattern order.
var contractions = [...]string{"s", "t", "re", "ve", "m", "ll", "d"}

// isSpace is the regex module's \s: the Unicode White_Space property.
// (Python's re also counts U+001C..U+001F, but cleanup has removed those.)
func isSpace(r rune) bool { return unicode.IsSpace(r) }

// matchFold reports the length of the prefix of s that matches the ASCII
// literal lit case-insensitively as the regex module folds: simple case
// folding, under which 's' also matches U+017F LATIN SMALL LETTER LONG S
// ('k' would also match U+212A KELVIN SIGN, but no literal has a 'k').
func matchFold(s []byte, lit string) int {
	n := 0
	for k := 0; k < len(lit); k++ {
		if n >= len(s) {
			return 0
		}
		c := lit[k]
		r, size := utf8.DecodeRune(s[n:])
		switch {
		case r == rune(c):
		case c >= 'a' && c <= 'z' && r == rune(c-'a'+'A'):
		case c == 's' && r == 'ſ':
		default:
			return 0
		}
		n += size
	}
	return n
}

// appendLower appends Python's str.lower() of s: the full Unicode lower-case
// mapping, which differs from Go's simple mapping for U+0130 (-> "i̇") and
// for capital sigma, which becomes final sigma at the end of a word.
func appendLower(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch r {
		case 'İ':
			dst = append(dst, "i\u0307"...)
		case 'Σ':
			if finalSigma(s, i, i+size) {
				dst = utf8.AppendRune(dst, 'ς')
			} else {
				dst = utf8.AppendRune(dst, 'σ')
			}
		default:
			dst = utf8.AppendRune(dst, unicode.ToLower(r))
		}
		i += size
	}
	return dst
}

// finalSigma is Unicode's Final_Sigma condition as CPython tests it for the
// sigma at s[start:end]: a cased letter before it and none after it,
// skipping case-ignorable characters both ways.
func finalSigma(s []byte, start, end int) bool {
	casedBefore := false
	for j := start; j > 0; {
		r, size := utf8.DecodeLastRune(s[:j])
		j -= size
		if !caseIgnorable(r) {
			casedBefore = cased(r)
			break
		}
	}
	if !casedBefore {
		return false
	}
	for j := end; j < len(s); {
		r, size := utf8.DecodeRune(s[j:])
		if !caseIgnorable(r) {
			return !cased(r)
		}
		j += size
	}
	return true
}

// cased is Unicode's Cased property: Lowercase, Uppercase or Lt.
func cased(r rune) bool {
	return unicode.IsLower(r) || unicode.IsUpper(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// caseIgnorable is Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk, and
// Word_Break MidLetter, MidNumLet and Single_Quote.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '·', 0x0387, 0x055F, 0x05F4, 0x2018, 0x2019, 0x2024,
		0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}
