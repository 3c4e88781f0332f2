package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// The golden tokenizer is loaded once per test binary: it is read-only and
// safe to share.
var (
	goldenOnce sync.Once
	goldenTok  *Tokenizer
	goldenErr  error
)

func goldenTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	dir := golden.Path(t, "tiny-sd15", "tokenizer")
	goldenOnce.Do(func() { goldenTok, goldenErr = Load(dir) })
	if goldenErr != nil {
		t.Fatal(goldenErr)
	}
	return goldenTok
}

func goldenPrompts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(golden.Path(t, "prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var prompts []string
	if err := json.Unmarshal(data, &prompts); err != nil {
		t.Fatalf("prompts.json: %v", err)
	}
	return prompts
}

// TestGolden checks every golden prompt against the reference tokenizer's
// input_ids and attention_mask (tokenizer_ref.safetensors, [11,77] int64).
func TestGolden(t *testing.T) {
	tok := goldenTokenizer(t)
	prompts := goldenPrompts(t)
	f, err := safetensors.Open(golden.Path(t, "tokenizer_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantIDs, shape, err := f.Int64s("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	wantMask, maskShape, err := f.Int64s("attention_mask")
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != len(prompts) || shape[1] != tok.MaxLength() {
		t.Fatalf("input_ids shape %v, want [%d %d]", shape, len(prompts), tok.MaxLength())
	}
	if len(maskShape) != 2 || maskShape[0] != shape[0] || maskShape[1] != shape[1] {
		t.Fatalf("attention_mask shape %v, want %v", maskShape, shape)
	}
	n := shape[1]
	for i, prompt := range prompts {
		enc, err := tok.EncodePadded(prompt, n)
		if err != nil {
			t.Fatalf("prompt %d: %v", i, err)
		}
		ids, mask := wantIDs[i*n:(i+1)*n], wantMask[i*n:(i+1)*n]
		for j := range n {
			if int64(enc.IDs[j]) != ids[j] || int64(enc.Mask[j]) != mask[j] {
				t.Errorf("prompt %d %q: position %d: got id %d mask %d, want id %d mask %d\ngot  %v\nwant %v",
					i, prompt, j, enc.IDs[j], enc.Mask[j], ids[j], mask[j], enc.IDs, ids)
				break
			}
		}
		wantLen := 0
		for _, m := range mask {
			wantLen += int(m)
		}
		if enc.Len != wantLen {
			t.Errorf("prompt %d: Len %d, want %d", i, enc.Len, wantLen)
		}
		// Encode gives the unpadded content: the reference row between BOS
		// and EOS whenever nothing was truncated.
		if content := tok.Encode(prompt); !enc.Truncated {
			if len(content) != wantLen-2 {
				t.Errorf("prompt %d: Encode gave %d ids, want %d", i, len(content), wantLen-2)
			} else {
				for j, id := range content {
					if int64(id) != ids[j+1] {
						t.Errorf("prompt %d: Encode id %d = %d, want %d", i, j, id, ids[j+1])
						break
					}
				}
			}
		} else if len(content) <= n-2 {
			t.Errorf("prompt %d: truncated, but Encode gave only %d ids", i, len(content))
		}
	}
}

func TestSpecialIDs(t *testing.T) {
	tok := goldenTokenizer(t)
	if tok.MaxLength() != 77 || tok.BOS() != 49406 || tok.EOS() != 49407 || tok.PadID() != 49407 || tok.VocabSize() != 49408 {
		t.Errorf("MaxLength %d BOS %d EOS %d PadID %d VocabSize %d, want 77 49406 49407 49407 49408",
			tok.MaxLength(), tok.BOS(), tok.EOS(), tok.PadID(), tok.VocabSize())
	}
}

// TestHugePrompt feeds about 1 MB of text, as a single word, as many words
// and as many lines: each must come back truncated to 77 ids.
func TestHugePrompt(t *testing.T) {
	tok := goldenTokenizer(t)
	const size = 1 << 20
	cases := map[string]string{
		"words":      strings.Repeat("a photo of an astronaut ", size/24),
		"lines":      strings.Repeat("a cat\n", size/6),
		"one word":   strings.Repeat("x", size),
		"punct":      strings.Repeat("!?", size/2),
		"emoji":      strings.Repeat("🚀", size/4),
		"entities":   strings.Repeat("&amp;", size/5),
		"nested":     "&" + strings.Repeat("amp;", size/4),
		"combining":  "e" + strings.Repeat("\u0301\u0323", size/4),
		"controls":   strings.Repeat("\x01", size) + " tail",
		"digits":     strings.Repeat("7", size),
		"whitespace": strings.Repeat(" \t", size/2) + "end",
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			enc, err := tok.EncodePadded(text, tok.MaxLength())
			if err != nil {
				t.Fatal(err)
			}
			if len(enc.IDs) != 77 || len(enc.Mask) != 77 || enc.IDs[0] != 49406 || enc.IDs[enc.Len-1] != 49407 {
				t.Fatalf("got %d ids (Len %d): %v", len(enc.IDs), enc.Len, enc.IDs)
			}
		})
	}
}

func TestEncodePaddedLengths(t *testing.T) {
	tok := goldenTokenizer(t)
	for _, maxLen := range []int{2, 3, 5, 77, 100} {
		enc, err := tok.EncodePadded("a photograph of an astronaut riding a horse", maxLen)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc.IDs) != maxLen || len(enc.Mask) != maxLen || enc.IDs[0] != tok.BOS() || enc.IDs[enc.Len-1] != tok.EOS() {
			t.Errorf("maxLen %d: %v (Len %d)", maxLen, enc.IDs, enc.Len)
		}
		// The prompt has 8 content tokens (golden row 0).
		if wantTrunc := maxLen-2 < 8; enc.Truncated != wantTrunc {
			t.Errorf("maxLen %d: Truncated %v, want %v", maxLen, enc.Truncated, wantTrunc)
		}
	}
	for _, bad := range []int{-1, 0, 1, 1 << 20} {
		if _, err := tok.EncodePadded("x", bad); err == nil {
			t.Errorf("maxLen %d: no error", bad)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	tok := goldenTokenizer(t)
	want, _ := tok.EncodePadded("a photograph of an astronaut riding a horse", 77)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				// Distinct words exercise cache insertion and rotation.
				tok.Encode(strings.Repeat("z", g+1) + string(rune('a'+i%26)) + "q")
				got, _ := tok.EncodePadded("a photograph of an astronaut riding a horse", 77)
				for j := range got.IDs {
					if got.IDs[j] != want.IDs[j] {
						t.Errorf("goroutine %d: ids changed: %v", g, got.IDs)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkEncodePadded(b *testing.B) {
	tok := goldenTokenizer(b)
	prompt := "(masterpiece:1.2), best quality, ultra-detailed, 8k, a photograph of an astronaut riding a horse on mars"
	for b.Loop() {
		tok.EncodePadded(prompt, 77)
	}
}

func BenchmarkEncodePaddedHuge(b *testing.B) {
	tok := goldenTokenizer(b)
	for _, tc := range []struct{ name, text string }{
		{"words", strings.Repeat("a photo of an astronaut ", 1<<20/24)},
		{"one word", strings.Repeat("x", 1<<20)},
		{"emoji", strings.Repeat("🚀", 1<<18)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				tok.EncodePadded(tc.text, 77)
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	dir := golden.Path(b, "tiny-sd15", "tokenizer")
	if _, err := os.Stat(filepath.Join(dir, VocabFile)); err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		if _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}
