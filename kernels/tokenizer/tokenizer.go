// Package tokenizer turns a prompt into the token ids the CLIP text encoder
// reads. It is the first step of a generation request: request -> tokenize
// -> CLIP encode -> control image -> scheduler loop -> VAE -> PNG.
//
// It reproduces Hugging Face transformers' slow CLIPTokenizer as Stable
// Diffusion pipelines call it (padding="max_length", truncation=True,
// max_length=model_max_length), reading a diffusers tokenizer/ folder:
//
//  1. text cleanup: ftfy.fix_text (ftfy 6.3.1 defaults), except its mojibake
//     repair (see below);
//  2. whitespace collapse and strip, then Python's str.lower();
//  3. the CLIP pre-split pattern, with IGNORECASE,
//     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//     run by a hand-written linear scanner; literal "<|startoftext|>" and
//     "<|endoftext|>" in the prompt become those special tokens;
//  4. UTF-8 bytes mapped through GPT-2's byte-to-unicode table, then
//     byte-level BPE over the merge ranks, "</w>" ending each word.
//
// # Text cleanup covered
//
// Of ftfy.fix_text this package applies, in ftfy's order and repeated until
// the text stops changing (at most 16 passes): HTML entity unescaping with
// ftfy's rules ("auto": off from the first line holding '<'; HTML5 names,
// their upper-case variants such as &EACUTE;, and numeric references as
// Python's html.unescape decodes them), C1 controls read as Windows-1252,
// Latin ligature splitting, full/half-width folding, curly quote
// straightening, ANSI terminal escape removal, control character removal and
// NFC normalization (Unicode 14.0.0, as CPython 3.11). Line-break unification
// is skipped because every form it rewrites is whitespace either way.
// Lines are fixed independently, and lines over 1,000,000 code points are cut
// into segments, as ftfy does.
//
// Not covered: ftfy's fix_encoding (mojibake repair such as "cafÃ©" ->
// "café", restore_byte_a0, decode_inconsistent_utf8); such text is tokenized
// as written. Python strings can hold lone surrogates that fix_surrogates
// repairs; Go strings cannot, and each byte of invalid UTF-8 is read as
// U+FFFD instead, as encoding/json does. Letter, number and case data come
// from Go's unicode package (Unicode 15.0.0), so characters new in Unicode
// 15 may be classed differently from CPython 3.11.
//
// Special tokens are recognised the way OpenAI's CLIP tokenizer and the
// golden reference do, by the pattern on the cleaned, lower-cased text, so
// "<|ENDOFTEXT|>" is the end-of-text token too. (transformers splits its
// added tokens out before cleanup, so it may differ on such prompts.)
//
// A Tokenizer is safe for concurrent use. It keeps a bounded cache of BPE
// results, so a server fed untrusted prompts does not grow without bound,
// and it stops reading a prompt once it has the tokens it will keep, so a
// megabyte prompt costs little more than a short one.
package tokenizer

//go:generate sh -c "python3 gen_tables.py > tables.go"

import (
	"fmt"
	"unicode/utf8"
)

// Tokenizer encodes prompts for one CLIP text encoder. Build one with Load or
// New; the zero value is not usable.
type Tokenizer struct {
	vocabSize int
	maxLength int

	bos, eos, pad, unk int32
	// startText and endText are the ids a literal "<|startoftext|>" or
	// "<|endoftext|>" in a prompt becomes.
	startText, endText int32

	// Every BPE symbol is interned to an int32: the 256 byte symbols, their
	// word-final "</w>" forms, and every merge operand and result.
	byteSym    [256]int32
	byteSymEnd [256]int32
	merges     mergeTable
	symVocab   []int32 // symbol -> vocabulary id (unk when absent)

	cache *bpeCache
}

// Encoding is one prompt ready for the text encoder.
type Encoding struct {
	// IDs has exactly the requested length: BOS, content, EOS, then padding.
	IDs []int32
	// Mask is 1 for BOS through EOS and 0 for padding (transformers'
	// attention_mask; SD 1.x text encoders do not read it).
	Mask []int32
	// Len counts the unpadded ids, BOS and EOS included; IDs[Len-1] is EOS.
	Len int
	// Truncated reports that content ids were dropped to fit.
	Truncated bool
}

// MaxLength is the tokenizer's model_max_length (77 for CLIP), the length SD
// pipelines pad and truncate to.
func (t *Tokenizer) MaxLength() int { return t.maxLength }

// VocabSize is one more than the largest vocabulary id; every id the
// tokenizer returns is below it.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// BOS returns the id that starts every padded encoding (<|startoftext|>).
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the id that ends the content of every padded encoding
// (<|endoftext|>).
func (t *Tokenizer) EOS() int32 { return t.eos }

// PadID returns the id that fills padded encodings after EOS.
func (t *Tokenizer) PadID() int32 { return t.pad }

// Encode returns the BPE ids of the whole text, without BOS, EOS, padding or
// truncation. Its cost grows with the text; servers should call
// EncodePadded, which stops reading once it has enough tokens.
func (t *Tokenizer) Encode(text string) []int32 {
	ids, _ := t.encode(text, -1)
	return ids
}

// EncodePadded encodes text as SD pipelines call the tokenizer
// (padding="max_length", truncation=True, max_length=maxLen): BOS, at most
// maxLen-2 content ids, EOS, then the pad id up to maxLen. Pass MaxLength()
// for the model's own length. maxLen must lie in [2, 65536].
func (t *Tokenizer) EncodePadded(text string, maxLen int) (Encoding, error) {
	if maxLen < 2 || maxLen > maxMaxLength {
		return Encoding{}, fmt.Errorf("tokenizer: max length %d is outside [2, %d]", maxLen, maxMaxLength)
	}
	content, truncated := t.encode(text, maxLen-2)
	ids := make([]int32, maxLen)
	mask := make([]int32, maxLen)
	ids[0] = t.bos
	n := 1 + copy(ids[1:maxLen-1], content)
	ids[n] = t.eos
	n++
	for i := range n {
		mask[i] = 1
	}
	for i := n; i < maxLen; i++ {
		ids[i] = t.pad
	}
	return Encoding{IDs: ids, Mask: mask, Len: n, Truncated: truncated}, nil
}

// encode tokenizes text, stopping once it has more than limit ids (limit < 0:
// never). It reports whether ids beyond limit existed; the returned ids are
// cut to limit.
func (t *Tokenizer) encode(text string, limit int) ([]int32, bool) {
	if !utf8.ValidString(text) {
		text = replaceInvalidUTF8(text)
	}
	e := encoder{t: t, limit: limit}
	unescape := true
	for pos := 0; pos < len(text) && !e.full(); {
		end := segmentEnd(text, pos)
		seg := text[pos:end]
		// ftfy's unescape_html="auto" turns off for good at the first
		// segment that looks like real HTML.
		if unescape && containsByte(seg, '<') {
			unescape = false
		}
		e.segment(seg, unescape)
		pos = end
	}
	e.flush()
	if limit >= 0 && len(e.ids) > limit {
		return e.ids[:limit], true
	}
	return e.ids, false
}
