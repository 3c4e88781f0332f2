package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// maxDecodeLength is ftfy's max_decode_length: a line longer than this many
// code points is fixed in separate segments.
const maxDecodeLength = 1_000_000

// encoder streams one prompt through cleanup, lower-casing, pre-splitting and
// BPE. It works word by word: a "word" is the text between spaces, tabs and
// newlines of the raw prompt. No cleanup step joins or splits text across
// those three characters and no pre-split token spans whitespace, so each
// word can be finished, and the prompt abandoned once enough ids exist,
// without changing the result.
type encoder struct {
	t       *Tokenizer
	limit   int
	ids     []int32
	pending []byte // cleaned text of the current word, not yet tokenized
	lower   []byte
}

func (e *encoder) full() bool { return e.limit >= 0 && len(e.ids) > e.limit }

// segment cleans and tokenizes one ftfy segment: a line with its '\n', or a
// max_decode_length slice of a longer line.
func (e *encoder) segment(seg string, unescape bool) {
	start := 0
	for i := 0; i < len(seg); i++ {
		switch seg[i] {
		case ' ', '\t', '\n':
		default:
			continue
		}
		if i > start {
			e.pending = append(e.pending, fixPiece(seg[start:i], unescape)...)
		}
		e.flush()
		if e.full() {
			return
		}
		start = i + 1
	}
	// A word cut by the segment's end continues in the next segment: ftfy
	// fixed the halves apart, but they are tokenized as one.
	if start < len(seg) {
		e.pending = append(e.pending, fixPiece(seg[start:], unescape)...)
	}
}

// flush tokenizes the pending word.
func (e *encoder) flush() {
	if len(e.pending) == 0 {
		return
	}
	e.lower = appendLower(e.lower[:0], e.pending)
	e.pending = e.pending[:0]
	s := e.lower
	for i := 0; i < len(s) && !e.full(); {
		start, end := nextPreToken(s, i)
		if start == end {
			break
		}
		e.ids = e.t.appendBPE(e.ids, s[start:end])
		i = end
	}
}

// segmentEnd returns the end of the ftfy segment starting at pos.
func segmentEnd(text string, pos int) int {
	end := len(text)
	if nl := strings.IndexByte(text[pos:], '\n'); nl >= 0 {
		end = pos + nl + 1
	}
	if end-pos <= maxDecodeLength {
		return end // fewer bytes than the limit, so fewer code points
	}
	// Count code points by their lead bytes.
	n := 0
	for i := pos; i < end; i++ {
		if text[i]&0xC0 != 0x80 {
			if n == maxDecodeLength {
				return i
			}
			n++
		}
	}
	return end
}

func containsByte(s string, b byte) bool { return strings.IndexByte(s, b) >= 0 }

// replaceInvalidUTF8 turns each byte that is not part of valid UTF-8 into
// U+FFFD, as encoding/json does when it decodes a request body.
func replaceInvalidUTF8(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
