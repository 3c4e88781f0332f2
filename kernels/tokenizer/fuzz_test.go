package tokenizer

import (
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzEncode checks, for any prompt: no panic, exactly MaxLength ids that
// start with BOS and end their content with EOS, a mask that matches, ids
// inside the vocabulary, and content equal to the start of the untruncated
// encoding (the early stop must not change what is kept).
func FuzzEncode(f *testing.F) {
	tok := goldenTokenizer(f)
	f.Fuzz(func(t *testing.T, text string) {
		enc, err := tok.EncodePadded(text, tok.MaxLength())
		if err != nil {
			t.Fatal(err)
		}
		n := tok.MaxLength()
		if len(enc.IDs) != n || len(enc.Mask) != n || enc.Len < 2 || enc.Len > n {
			t.Fatalf("%d ids, %d mask, Len %d", len(enc.IDs), len(enc.Mask), enc.Len)
		}
		if enc.IDs[0] != tok.BOS() || enc.IDs[enc.Len-1] != tok.EOS() {
			t.Fatalf("ids %v (Len %d) do not run BOS..EOS", enc.IDs, enc.Len)
		}
		for i, id := range enc.IDs {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("id %d at %d outside the vocabulary", id, i)
			}
			if i < enc.Len {
				if enc.Mask[i] != 1 {
					t.Fatalf("mask %v (Len %d)", enc.Mask, enc.Len)
				}
			} else if enc.Mask[i] != 0 || id != tok.PadID() {
				t.Fatalf("padding at %d: id %d mask %d", i, id, enc.Mask[i])
			}
		}
		full := tok.Encode(text)
		content := enc.IDs[1 : enc.Len-1]
		if enc.Truncated != (len(full) > n-2) || !slices.Equal(content, full[:len(content)]) {
			t.Fatalf("padded content %v (truncated %v) is not the start of %v", content, enc.Truncated, full)
		}
		// Invalid UTF-8 reads as U+FFFD per byte.
		if !utf8.ValidString(text) && !slices.Equal(full, tok.Encode(replaceInvalidUTF8(text))) {
			t.Fatal("invalid UTF-8 not read as U+FFFD")
		}
	})
}

// FuzzNew feeds arbitrary file contents to the loader: it must return a
// tokenizer or an error, never panic, and a tokenizer it returns must encode.
func FuzzNew(f *testing.F) {
	f.Fuzz(func(t *testing.T, vocab, merges, config []byte) {
		if len(config) == 0 {
			config = nil // no tokenizer_config.json
		}
		tok, err := New(Files{Vocab: vocab, Merges: merges, Config: config})
		if err != nil {
			return
		}
		enc, err := tok.EncodePadded("a photo of a cat, it's <|endoftext|> 😀", tok.MaxLength())
		if err != nil || len(enc.IDs) != tok.MaxLength() {
			t.Fatalf("encode: %v, %d ids", err, len(enc.IDs))
		}
	})
}

// FuzzMerge checks that both BPE mergers agree on any word, with the real
// merge table.
func FuzzMerge(f *testing.F) {
	tok := goldenTokenizer(f)
	f.Fuzz(func(t *testing.T, word []byte) {
		if len(word) == 0 {
			return
		}
		short := tok.mergeShort(tok.symbols(word))
		long := tok.mergeLong(tok.symbols(word))
		if !slices.Equal(short, long) {
			t.Fatalf("word %q: mergeShort %v, mergeLong %v", word, short, long)
		}
	})
}
