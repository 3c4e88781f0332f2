package tokenizer

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fixWords cleans text word by word, as the encoder does.
func fixWords(s string, unescape bool) string {
	words := strings.Split(s, " ")
	for i, w := range words {
		words[i] = fixPiece(w, unescape)
	}
	return strings.Join(words, " ")
}

// TestFtfyReference checks the cleanup against ftfy 6.3.1's own expected
// outputs: its test suite (tests/test_entities.py, tests/test_characters.py)
// and the doctests of ftfy/fixes.py and ftfy/__init__.py. Cases whose fix
// needs fix_encoding, which this package does not cover, are left out.
func TestFtfyReference(t *testing.T) {
	cases := []struct{ in, want string }{
		// fix_text_segment / fix_text (unescape_html "auto").
		{"&lt;&gt;", "<>"},
		{"jednocze&sacute;nie", "jednocześnie"},
		{"JEDNOCZE&Sacute;NIE", "JEDNOCZEŚNIE"},
		{"broken&#x81;", "broken\u0081"}, // Python "\x81" is U+0081
		{"&amp;amp;amp;", "&"},
		{"this is just informal english &not html", "this is just informal english &not html"},
		{"ＬＯＵＤ　ＮＯＩＳＥＳ", "LOUD NOISES"},
		{"\x01\x1b[36;44mfoo", "foo"},
		{"#superman #ohio 🏴\U000e0075\U000e0073\U000e006f\U000e0068\U000e007f #cleveland #usa 🇺🇸",
			"#superman #ohio 🏴\U000e0075\U000e0073\U000e006f\U000e0068\U000e007f #cleveland #usa 🇺🇸"},
		// unescape_html.
		{"&lt;tag&gt;", "<tag>"},
		{"&Jscr;ohn &HilbertSpace;ancock", "𝒥ohn ℋancock"},
		{"&checkmark;", "✓"},
		{"P&eacute;rez", "Pérez"},
		{"P&EACUTE;REZ", "PÉREZ"},
		{"BUNDESSTRA&SZLIG;E", "BUNDESSTRASSE"},
		{"&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"},
		{"euro &#x80;", "euro €"},
		{"EURO &EURO;", "EURO €"},
		{"not an entity &#20x6;", "not an entity &#20x6;"},
		{"JEDNOCZE&SACUTE;NIE", "JEDNOCZEŚNIE"},
		{"V&SCARON;ICHNI", "VŠICHNI"},
		{"&#xffff;", ""},
		{"&#xffffffff;", "\ufffd"},
		// remove_terminal_escapes, uncurl_quotes, fix_latin_ligatures,
		// fix_character_width.
		{"\x1b[36;44mI'm blue, da ba dee da ba doo...\x1b[0m", "I'm blue, da ba dee da ba doo..."},
		{"\u201chere\u2019s a test\u201d", "\"here's a test\""},
		{"ﬂuﬃeﬆ", "fluffiest"},
		{"Ｕﾀｰﾝ", "Uターン"},
		// remove_control_chars (CR and LF survive it; fix_line_breaks, not
		// applied here, would make CRLF one LF).
		{"\ufeffSometimes, \ufffcbad ideas \x7f\ufffalike these characters\ufffb \u206aget standardized.\r\n",
			"Sometimes, bad ideas like these characters get standardized.\r\n"},
		// The NFC step of fix_text.
		{"e\u0301", "é"},
	}
	for _, c := range cases {
		if got := fixWords(c.in, true); got != c.want {
			t.Errorf("fix(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestFtfySegments checks the per-line rules through whole prompts: ftfy
// test_entities gives fix_text("&amp;\n<html>\n&amp;") == "&\n<html>\n&amp;",
// because a line holding '<' turns entity decoding off for the rest of the
// text. The fixed text must tokenize like the original.
func TestFtfySegments(t *testing.T) {
	tok := goldenTokenizer(t)
	for _, c := range []struct{ in, fixed string }{
		{"&amp;\n<html>\n&amp;", "&\n<html>\n&amp;"},
		{"&lt;b&gt; <b>", "&lt;b&gt; <b>"},
		{"caf&eacute;\nna&iuml;ve", "café\nnaïve"},
	} {
		got, want := tok.Encode(c.in), tok.Encode(c.fixed)
		if !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want Encode(%q) = %v", c.in, got, c.fixed, want)
		}
	}
}

// TestNFCReference checks nfc against CPython's unicodedata.normalize for
// every canonically decomposable character and random mark sequences
// (testdata/nfc_reference.txt, made by gen_tables.py nfc-testdata).
func TestNFCReference(t *testing.T) {
	f, err := os.Open("testdata/nfc_reference.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parse := func(field string) string {
		var b strings.Builder
		for _, h := range strings.Fields(field) {
			n, err := strconv.ParseUint(h, 16, 32)
			if err != nil {
				t.Fatalf("bad code point %q", h)
			}
			b.WriteRune(rune(n))
		}
		return b.String()
	}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		in, want, ok := strings.Cut(line, ";")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		lines++
		src, exp := parse(in), parse(want)
		if got := nfc(src); got != exp {
			t.Errorf("nfc(%+q) = %+q, want %+q", src, got, exp)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines < 2000 {
		t.Fatalf("only %d cases read", lines)
	}
}

// TestLower checks Python's str.lower() where it differs from Go's simple
// mapping. Expected values are CPython 3.11's.
func TestLower(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ABC Ünï", "abc ünï"},
		{"İstanbul", "i\u0307stanbul"},
		{"ΟΔΟΣ", "οδος"},
		{"ΟΔΟΣ.", "οδος."},
		{"ΟΔΟΣ'Α", "οδοσ'α"},
		{"Σ", "σ"},
		{"ΑΣΑ", "ασα"},
		{"1Σ", "1σ"},
		{"Α\u0301Σ\u0301", "α\u0301ς\u0301"},
		{"ǅ", "ǆ"},
		{"K", "k"},
	} {
		if got := string(appendLower(nil, []byte(c.in))); got != c.want {
			t.Errorf("lower(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestUnescapeNumeric(t *testing.T) {
	// Expected values are ftfy 6.3.1's unescape_html on CPython 3.11 (Python
	// html.unescape, kept only when it decodes the whole reference).
	for _, c := range []struct{ in, want string }{
		{"&#65;", "A"},
		{"&#x41;", "A"},
		{"&#X41;", "A"},
		{"&#0065;", "A"},
		{"&#59;", "&#59;"}, // decodes to ';', so ftfy keeps it
		{"&#65abc;", "&#65abc;"},
		{"&#x;", "&#x;"},
		{"&#0;", "\ufffd"},
		{"&#13;", "\r"},
		{"&#1;", ""},
		{"&#x9f;", "Ÿ"},
		{"&#xd800;", "\ufffd"},
		{"&#x110000;", "\ufffd"},
		{"&#999999999999999999999;", "\ufffd"},
		{"&#1234567890123456789012345;", "&#1234567890123456789012345;"}, // 25 digits: no match
		{"&amp&amp;", "&amp&"},
		{"&#&amp;", "&#&"},
	} {
		if got := unescapeHTML(c.in); got != c.want {
			t.Errorf("unescapeHTML(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
