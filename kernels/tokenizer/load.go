package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// File names in a diffusers tokenizer/ folder.
const (
	VocabFile         = "vocab.json"
	MergesFile        = "merges.txt"
	ConfigFile        = "tokenizer_config.json"
	SpecialTokensFile = "special_tokens_map.json"
)

const (
	// maxMerges is how many merge lines after the header CLIP reads
	// (merges[1:49152-256-2+1] in transformers and OpenAI's tokenizer).
	maxMerges = 49152 - 256 - 2
	// defaultMaxLength is CLIP's context length, used when
	// tokenizer_config.json does not give model_max_length.
	defaultMaxLength = 77
	// maxVocabID bounds vocabulary ids so a corrupt file cannot make the
	// loader allocate without limit.
	maxVocabID = 1 << 24
	// maxMaxLength bounds model_max_length for the same reason.
	maxMaxLength = 1 << 16
)

// CLIP's special tokens, as the pre-split pattern spells them.
const (
	startOfText = "<|startoftext|>"
	endOfText   = "<|endoftext|>"
)

// Files holds the contents of a tokenizer folder. Config and SpecialTokens
// may be nil; defaults are CLIPTokenizer's.
type Files struct {
	Vocab         []byte // vocab.json
	Merges        []byte // merges.txt
	Config        []byte // tokenizer_config.json
	SpecialTokens []byte // special_tokens_map.json
}

// Load reads a diffusers tokenizer/ folder: vocab.json and merges.txt, and
// tokenizer_config.json and special_tokens_map.json where present. Errors
// name the file at fault.
func Load(dir string) (*Tokenizer, error) {
	var f Files
	for _, file := range []struct {
		name     string
		dst      *[]byte
		optional bool
	}{
		{VocabFile, &f.Vocab, false},
		{MergesFile, &f.Merges, false},
		{ConfigFile, &f.Config, true},
		{SpecialTokensFile, &f.SpecialTokens, true},
	} {
		path := filepath.Join(dir, file.name)
		data, err := os.ReadFile(path)
		if file.optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		*file.dst = data
	}
	return build(f, dir)
}

// New builds a Tokenizer from the contents of a tokenizer folder. Errors
// name the file at fault.
func New(f Files) (*Tokenizer, error) { return build(f, "") }

// errNoMerges reports a merges file with no merge lines.
var errNoMerges = errors.New("no merges after the header line")

func build(f Files, dir string) (*Tokenizer, error) {
	// Errors name the file, with its folder when it was read from one.
	name := func(file string) string { return filepath.Join(dir, file) }
	vocab, vocabSize, err := parseVocab(f.Vocab)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name(VocabFile), err)
	}
	pairs, err := parseMerges(f.Merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name(MergesFile), err)
	}
	cfg := specialConfig{
		maxLength: defaultMaxLength,
		tokens: map[string]string{
			"bos_token": startOfText,
			"eos_token": endOfText,
			"pad_token": endOfText,
			"unk_token": endOfText,
		},
	}
	// special_tokens_map.json overrides tokenizer_config.json, as in
	// transformers' from_pretrained.
	if f.Config != nil {
		if err := cfg.read(f.Config, true); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", name(ConfigFile), err)
		}
	}
	if f.SpecialTokens != nil {
		if err := cfg.read(f.SpecialTokens, false); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", name(SpecialTokensFile), err)
		}
	}

	t := &Tokenizer{vocabSize: vocabSize, maxLength: cfg.maxLength}
	for _, s := range []struct {
		key string
		dst *int32
	}{
		{"bos_token", &t.bos}, {"eos_token", &t.eos}, {"pad_token", &t.pad}, {"unk_token", &t.unk},
	} {
		id, ok := vocab[cfg.tokens[s.key]]
		if !ok {
			return nil, fmt.Errorf("tokenizer: %s: %s %q is not in the vocabulary", name(VocabFile), s.key, cfg.tokens[s.key])
		}
		*s.dst = id
	}
	t.startText = t.lookup(vocab, startOfText)
	t.endText = t.lookup(vocab, endOfText)
	t.buildBPE(vocab, pairs)
	t.cache = newBPECache()
	return t, nil
}

// lookup maps a token to its id, or to unk as transformers does.
func (t *Tokenizer) lookup(vocab map[string]int32, tok string) int32 {
	if id, ok := vocab[tok]; ok {
		return id
	}
	return t.unk
}

// buildBPE interns the BPE symbols and indexes the merges by operand pair.
func (t *Tokenizer) buildBPE(vocab map[string]int32, pairs [][2]string) {
	syms := make(map[string]int32, 2*len(pairs)+512)
	var names []string
	intern := func(s string) int32 {
		if id, ok := syms[s]; ok {
			return id
		}
		id := int32(len(names))
		syms[s] = id
		names = append(names, s)
		return id
	}
	for b := range 256 {
		r := byteToRune[b]
		t.byteSym[b] = intern(string(r))
		t.byteSymEnd[b] = intern(string(r) + "</w>")
	}
	t.merges = newMergeTable(len(pairs))
	for rank, p := range pairs {
		a, b := intern(p[0]), intern(p[1])
		// A repeated pair keeps its last rank, as Python's dict(zip(...)).
		t.merges.set(pairKey(a, b), merge{rank: int32(rank), result: intern(p[0] + p[1])})
	}
	t.symVocab = make([]int32, len(names))
	for i, s := range names {
		t.symVocab[i] = t.lookup(vocab, s)
	}
}

// parseVocab decodes vocab.json, a JSON object from token to id.
func parseVocab(data []byte) (map[string]int32, int, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, 0, errors.New("empty file")
	}
	var raw map[string]json.Number
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, 0, fmt.Errorf("not a JSON object of token ids: %w", err)
	}
	if dec.More() {
		return nil, 0, errors.New("trailing data after the JSON object")
	}
	if len(raw) == 0 {
		return nil, 0, errors.New("no tokens")
	}
	vocab := make(map[string]int32, len(raw))
	size := 0
	for tok, num := range raw {
		id, err := num.Int64()
		if err != nil || id < 0 || id >= maxVocabID {
			return nil, 0, fmt.Errorf("token %q: id %s is not an integer in [0, %d)", tok, num, maxVocabID)
		}
		vocab[tok] = int32(id)
		size = max(size, int(id)+1)
	}
	return vocab, size, nil
}

// parseMerges reads merges.txt the way CLIPTokenizer does: strip the file,
// split lines, drop the first (the "#version" header), keep at most
// maxMerges. Each kept line must hold exactly two symbols.
func parseMerges(data []byte) ([][2]string, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	lines = lines[1:min(len(lines), maxMerges+1)]
	if len(lines) == 0 {
		return nil, errNoMerges
	}
	pairs := make([][2]string, len(lines))
	for i, line := range lines {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want two symbols separated by a space, got %q", i+2, line)
		}
		pairs[i] = [2]string{fields[0], fields[1]}
	}
	return pairs, nil
}

// specialConfig is what tokenizer_config.json and special_tokens_map.json
// contribute.
type specialConfig struct {
	maxLength int
	tokens    map[string]string
}

// read merges one JSON config file into c. Only tokenizer_config.json
// carries model_max_length.
func (c *specialConfig) read(data []byte, withLength bool) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if v, ok := raw["model_max_length"]; ok && withLength {
		var n float64
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("model_max_length: %w", err)
		}
		if n != math.Trunc(n) || n < 2 || n > maxMaxLength {
			return fmt.Errorf("model_max_length %s is not an integer in [2, %d]", v, maxMaxLength)
		}
		c.maxLength = int(n)
	}
	for key := range c.tokens {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			continue
		}
		// A special token is either a string or an AddedToken object.
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			var obj struct {
				Content *string `json:"content"`
			}
			if err := json.Unmarshal(v, &obj); err != nil || obj.Content == nil {
				return fmt.Errorf("%s: want a string or an object with \"content\", got %s", key, v)
			}
			s = *obj.Content
		}
		c.tokens[key] = s
	}
	return nil
}
