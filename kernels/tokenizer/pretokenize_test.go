package tokenizer

import (
	"slices"
	"testing"
)

// TestPreTokens checks the scanner against the CLIP pattern run by Python's
// regex module (regex.findall with IGNORECASE); the expected splits are its
// output.
func TestPreTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"don't won't i'm you're we've they'll he'd", []string{"don", "'t", "won", "'t", "i", "'m", "you", "'re", "we", "'ve", "they", "'ll", "he", "'d"}},
		{"it's'll", []string{"it", "'s", "'ll"}},
		{"''s", []string{"''", "s"}},
		{"'x", []string{"'", "x"}},
		{"'re're", []string{"'re", "'re"}},
		{"x<<|endoftext|>", []string{"x", "<<|", "endoftext", "|>"}},
		{"<|startoftext|>a<|endoftext|>", []string{"<|startoftext|>", "a", "<|endoftext|>"}},
		{"<|ſtartoftext|>", []string{"<|ſtartoftext|>"}},
		{"'ſ", []string{"'ſ"}},
		{"<|endoftext", []string{"<|", "endoftext"}},
		{"3.14159 $100", []string{"3", ".", "1", "4", "1", "5", "9", "$", "1", "0", "0"}},
		{"²³½", []string{"²", "³", "½"}},
		{"a\u0301b", []string{"a", "\u0301", "b"}},
		{"東京 🚀 emoji", []string{"東京", "🚀", "emoji"}},
		{"hello,world...", []string{"hello", ",", "world", "..."}},
		{"(masterpiece:1.2)", []string{"(", "masterpiece", ":", "1", ".", "2", ")"}},
		{"a\u00a0b\u3000c\u2028d\u200be", []string{"a", "b", "c", "d", "\u200b", "e"}},
		{"mixed-case_words/slashes", []string{"mixed", "-", "case", "_", "words", "/", "slashes"}},
		{"٣٤ abc", []string{"٣", "٤", "abc"}},
		{"", nil},
		{" \t\n ", nil},
	} {
		var got []string
		s := []byte(c.in)
		for i := 0; ; {
			start, end := nextPreToken(s, i)
			if start == end {
				break
			}
			got = append(got, string(s[start:end]))
			i = end
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("split(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
