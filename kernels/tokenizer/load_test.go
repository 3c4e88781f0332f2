package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	tinyVocab  = `{"a": 0, "b": 1, "a</w>": 2, "b</w>": 3, "ab</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6}`
	tinyMerges = "#version: 0.2\na b</w>\n"
)

// writeDir writes a tokenizer folder of the given files into a temp dir.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{"no vocab", map[string]string{MergesFile: tinyMerges}, []string{VocabFile}},
		{"no merges", map[string]string{VocabFile: tinyVocab}, []string{MergesFile}},
		{"empty vocab", map[string]string{VocabFile: "", MergesFile: tinyMerges}, []string{VocabFile, "empty"}},
		{"truncated vocab", map[string]string{VocabFile: `{"a": 0,`, MergesFile: tinyMerges}, []string{VocabFile}},
		{"vocab not an object", map[string]string{VocabFile: `["a"]`, MergesFile: tinyMerges}, []string{VocabFile}},
		{"fractional id", map[string]string{VocabFile: `{"a": 1.5}`, MergesFile: tinyMerges}, []string{VocabFile, `"a"`}},
		{"negative id", map[string]string{VocabFile: `{"a": -1}`, MergesFile: tinyMerges}, []string{VocabFile, `"a"`}},
		{"huge id", map[string]string{VocabFile: `{"a": 99999999999}`, MergesFile: tinyMerges}, []string{VocabFile}},
		{"trailing data", map[string]string{VocabFile: tinyVocab + "{}", MergesFile: tinyMerges}, []string{VocabFile, "trailing"}},
		{"empty merges", map[string]string{VocabFile: tinyVocab, MergesFile: ""}, []string{MergesFile, "no merges"}},
		{"header only", map[string]string{VocabFile: tinyVocab, MergesFile: "#version: 0.2\n"}, []string{MergesFile, "no merges"}},
		{"three symbols", map[string]string{VocabFile: tinyVocab, MergesFile: "#version: 0.2\na b\na b c\n"}, []string{MergesFile, "line 3"}},
		{"blank line", map[string]string{VocabFile: tinyVocab, MergesFile: "#version: 0.2\na b\n\na b</w>\n"}, []string{MergesFile, "line 3"}},
		{"bad utf-8", map[string]string{VocabFile: tinyVocab, MergesFile: "#version: 0.2\na \xff\n"}, []string{MergesFile, "UTF-8"}},
		{"bad config", map[string]string{VocabFile: tinyVocab, MergesFile: tinyMerges, ConfigFile: "{"}, []string{ConfigFile}},
		{"huge max length", map[string]string{VocabFile: tinyVocab, MergesFile: tinyMerges, ConfigFile: `{"model_max_length": 1e30}`}, []string{ConfigFile, "model_max_length"}},
		{"fractional max length", map[string]string{VocabFile: tinyVocab, MergesFile: tinyMerges, ConfigFile: `{"model_max_length": 7.5}`}, []string{ConfigFile, "model_max_length"}},
		{"bad token type", map[string]string{VocabFile: tinyVocab, MergesFile: tinyMerges, SpecialTokensFile: `{"pad_token": 3}`}, []string{SpecialTokensFile, "pad_token"}},
		{"unknown pad", map[string]string{VocabFile: tinyVocab, MergesFile: tinyMerges, SpecialTokensFile: `{"pad_token": "!"}`}, []string{VocabFile, "pad_token", `"!"`}},
		{"no bos in vocab", map[string]string{VocabFile: `{"a": 0, "<|endoftext|>": 1}`, MergesFile: tinyMerges}, []string{VocabFile, "bos_token"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeDir(t, c.files)
			tok, err := Load(dir)
			if err == nil {
				t.Fatalf("no error, got %+v", tok)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if !strings.Contains(msg, dir) {
				t.Errorf("error %q does not name the folder", msg)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing folder: no error")
	}
}

func TestLoadConfig(t *testing.T) {
	dir := writeDir(t, map[string]string{
		VocabFile:  tinyVocab,
		MergesFile: tinyMerges,
		ConfigFile: `{"model_max_length": 16, "pad_token": "a</w>", "bos_token": {"content": "<|startoftext|>", "lstrip": false}}`,
		// special_tokens_map.json overrides tokenizer_config.json.
		SpecialTokensFile: `{"pad_token": {"content": "b</w>", "normalized": true}, "unk_token": null}`,
	})
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxLength() != 16 || tok.BOS() != 5 || tok.EOS() != 6 || tok.PadID() != 3 || tok.VocabSize() != 7 {
		t.Errorf("MaxLength %d BOS %d EOS %d PadID %d VocabSize %d, want 16 5 6 3 7",
			tok.MaxLength(), tok.BOS(), tok.EOS(), tok.PadID(), tok.VocabSize())
	}
	// "AB" lower-cases to "ab", whose a, b</w> merge into ab</w>; "ba" has
	// no merge and stays b, a</w>; the literal special token keeps its id.
	enc, err := tok.EncodePadded("AB ba <|endoftext|>", tok.MaxLength())
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{5, 4, 1, 2, 6, 6, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}
	if !slices.Equal(enc.IDs, want) || enc.Len != 6 {
		t.Errorf("got %v (Len %d), want %v (Len 6)", enc.IDs, enc.Len, want)
	}
	// Without the configs: CLIP's defaults, max length 77.
	tok, err = New(Files{Vocab: []byte(tinyVocab), Merges: []byte(tinyMerges)})
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxLength() != 77 || tok.PadID() != 6 {
		t.Errorf("defaults: MaxLength %d PadID %d, want 77 6", tok.MaxLength(), tok.PadID())
	}
	// Symbols missing from the vocabulary become unk (<|endoftext|>).
	if got := tok.Encode("c"); !slices.Equal(got, []int32{6}) {
		t.Errorf("unknown symbol: got %v, want [6]", got)
	}
}
