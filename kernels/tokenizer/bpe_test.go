package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestMergeLongMatchesShort checks the heap-free long-word merger against
// the direct transcription of CLIPTokenizer.bpe on the real merge table.
func TestMergeLongMatchesShort(t *testing.T) {
	tok := goldenTokenizer(t)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabets := []string{"abcdefghijklmnopqrstuvwxyz", "aab", "x", "th in er an", "!?.-", "😀🚀é東"}
	for i := range 400 {
		alpha := []rune(alphabets[i%len(alphabets)])
		n := 1 + rng.IntN(300)
		var b strings.Builder
		for range n {
			b.WriteRune(alpha[rng.IntN(len(alpha))])
		}
		word := []byte(b.String())
		short := tok.mergeShort(tok.symbols(word))
		long := tok.mergeLong(tok.symbols(word))
		if !slices.Equal(short, long) {
			t.Fatalf("word %q: mergeShort %v, mergeLong %v", word, short, long)
		}
	}
}

// TestMergeOddTables checks both mergers on merge tables no real tokenizer
// has (ranks that go down as symbols grow, repeated pairs), where the order
// of CLIPTokenizer's rounds matters.
func TestMergeOddTables(t *testing.T) {
	tables := []string{
		"#version: 0.2\na a\naa a\naaa a</w>\na a</w>\n",
		"#version: 0.2\naa aa\na a\naaaa a</w>\naaaa aa\n",
		"#version: 0.2\nb a\na b\nab a\nba b\nab ab\nba ba\na b</w>\nb a</w>\n",
		"#version: 0.2\na b\na b\nb a</w>\n", // repeated pair: the last rank counts
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for ti, merges := range tables {
		tok := syntheticTokenizer(t, merges)
		for range 300 {
			n := 1 + rng.IntN(120)
			word := make([]byte, n)
			for i := range word {
				word[i] = "ab"[rng.IntN(2)]
			}
			short := tok.mergeShort(tok.symbols(word))
			long := tok.mergeLong(tok.symbols(word))
			if !slices.Equal(short, long) {
				t.Fatalf("table %d word %q: mergeShort %v, mergeLong %v", ti, word, short, long)
			}
		}
	}
}

// syntheticTokenizer builds a tokenizer over the byte alphabet with the given
// merges.txt, its vocabulary holding every symbol the merges make.
func syntheticTokenizer(t testing.TB, merges string) *Tokenizer {
	t.Helper()
	vocab := map[string]int{}
	add := func(s string) {
		if _, ok := vocab[s]; !ok {
			vocab[s] = len(vocab)
		}
	}
	for b := range 256 {
		add(string(byteToRune[b]))
		add(string(byteToRune[b]) + "</w>")
	}
	for _, line := range strings.Split(merges, "\n")[1:] {
		if f := strings.Fields(line); len(f) == 2 {
			add(f[0] + f[1])
		}
	}
	add(startOfText)
	add(endOfText)
	var b strings.Builder
	b.WriteString("{")
	first := true
	for s, id := range vocab {
		if !first {
			b.WriteString(",")
		}
		first = false
		fmt.Fprintf(&b, "%q:%d", s, id)
	}
	b.WriteString("}")
	tok, err := New(Files{Vocab: []byte(b.String()), Merges: []byte(merges)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestCacheBounded checks that the BPE cache stops growing.
func TestCacheBounded(t *testing.T) {
	tok := goldenTokenizer(t)
	for i := range 5 * cacheShards * cacheGeneration {
		tok.Encode(fmt.Sprintf("w%dq", i))
	}
	total := 0
	for i := range tok.cache.shards {
		s := &tok.cache.shards[i]
		s.mu.Lock()
		total += len(s.cur) + len(s.old)
		s.mu.Unlock()
	}
	if limit := 2 * cacheShards * cacheGeneration; total > limit {
		t.Errorf("cache holds %d entries, limit %d", total, limit)
	}
	// Long words are not cached at all.
	long := []byte(strings.Repeat("y", maxCachedWord+1))
	tok.Encode(string(long))
	if _, ok := tok.cache.get(long); ok {
		t.Error("a word longer than maxCachedWord was cached")
	}
}
