package tokenizer

import (
	"math"
	"slices"
)

// merge is one entry of the merge table: the rank of an operand pair (lower
// merges first) and the symbol it merges into.
type merge struct {
	rank   int32
	result int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// mergeTable maps a pair key to its merge: an open-addressing hash table
// with linear probing, about twice as fast as a Go map on this hot path.
type mergeTable struct {
	keys  []uint64 // emptyKey where free
	vals  []merge
	shift uint
}

// emptyKey is no pair's key: symbol ids are non-negative int32s.
const emptyKey = ^uint64(0)

func newMergeTable(n int) mergeTable {
	size, shift := 16, uint(60)
	for size < 2*n {
		size *= 2
		shift--
	}
	t := mergeTable{keys: make([]uint64, size), vals: make([]merge, size), shift: shift}
	for i := range t.keys {
		t.keys[i] = emptyKey
	}
	return t
}

func (t *mergeTable) slot(key uint64) int {
	mask := len(t.keys) - 1
	for i := int((key * 0x9E3779B97F4A7C15) >> t.shift); ; i = (i + 1) & mask {
		if k := t.keys[i]; k == key || k == emptyKey {
			return i
		}
	}
}

// set adds or replaces the merge of key.
func (t *mergeTable) set(key uint64, m merge) {
	i := t.slot(key)
	t.keys[i], t.vals[i] = key, m
}

func (t *mergeTable) get(a, b int32) (merge, bool) {
	key := pairKey(a, b)
	i := t.slot(key)
	return t.vals[i], t.keys[i] == key
}

// byteToRune is GPT-2's bytes_to_unicode table: printable Latin-1 bytes map
// to themselves, the rest to U+0100 onwards in byte order, so every byte
// has a visible, non-space symbol.
var byteToRune = bytesToUnicode()

func bytesToUnicode() [256]rune {
	var m [256]rune
	next := rune(256)
	for b := range 256 {
		switch {
		case b >= '!' && b <= '~', b >= 0xA1 && b <= 0xAC, b >= 0xAE && b <= 0xFF:
			m[b] = rune(b)
		default:
			m[b] = next
			next++
		}
	}
	return m
}

// shortWord is the length, in bytes, up to which BPE uses the direct
// quadratic algorithm; longer words use mergeLong.
const shortWord = 48

// appendBPE appends the ids of one pre-split token.
func (t *Tokenizer) appendBPE(dst []int32, tok []byte) []int32 {
	// CLIPTokenizer seeds its BPE cache with the two special tokens, so they
	// map to their own ids instead of being split.
	switch string(tok) {
	case startOfText:
		return append(dst, t.startText)
	case endOfText:
		return append(dst, t.endText)
	}
	cacheable := len(tok) <= maxCachedWord
	if cacheable {
		if ids, ok := t.cache.get(tok); ok {
			return append(dst, ids...)
		}
	}
	syms := t.symbols(tok)
	if len(syms) <= shortWord {
		syms = t.mergeShort(syms)
	} else {
		syms = t.mergeLong(syms)
	}
	start := len(dst)
	for _, s := range syms {
		dst = append(dst, t.symVocab[s])
	}
	if cacheable {
		t.cache.put(string(tok), append([]int32(nil), dst[start:]...))
	}
	return dst
}

// symbols is the initial BPE word of a non-empty token: one symbol per
// byte, the last one word-final ("</w>").
func (t *Tokenizer) symbols(tok []byte) []int32 {
	syms := make([]int32, len(tok))
	for i, b := range tok {
		syms[i] = t.byteSym[b]
	}
	syms[len(syms)-1] = t.byteSymEnd[tok[len(tok)-1]]
	return syms
}

// mergeShort runs BPE as CLIPTokenizer.bpe writes it: find the adjacent pair
// with the lowest rank, merge every occurrence of it left to right, repeat.
func (t *Tokenizer) mergeShort(syms []int32) []int32 {
	for len(syms) > 1 {
		best := merge{rank: math.MaxInt32}
		var first, second int32
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := t.merges.get(syms[i], syms[i+1]); ok && m.rank < best.rank {
				best, first, second = m, syms[i], syms[i+1]
			}
		}
		if best.rank == math.MaxInt32 {
			break
		}
		w := 0
		for i := 0; i < len(syms); w++ {
			if i+1 < len(syms) && syms[i] == first && syms[i+1] == second {
				syms[w] = best.result
				i += 2
			} else {
				syms[w] = syms[i]
				i++
			}
		}
		syms = syms[:w]
	}
	return syms
}

// mergeLong gives mergeShort's result in about linear time for long words.
// Symbols sit in a linked list; candidate pairs wait in per-rank lists, keyed
// by the list position of their left symbol. All candidates of the lowest
// rank are taken at once and merged left to right, which is
// CLIPTokenizer's "merge every occurrence" step; a merge never creates a
// pair of the rank being merged (an operand would have to equal the longer
// merged symbol), so the batch is complete. Candidates whose pair has
// changed since they were queued are skipped.
func (t *Tokenizer) mergeLong(syms []int32) []int32 {
	n := len(syms)
	next := make([]int32, n)
	prev := make([]int32, n)
	var q rankQueue
	for i := range n {
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		if i+1 < n {
			if m, ok := t.merges.get(syms[i], syms[i+1]); ok {
				q.push(m.rank, int32(i))
			}
		}
	}
	next[n-1] = -1
	const dead = -1
	for {
		rank, batch, ok := q.pop()
		if !ok {
			break
		}
		for _, p := range batch {
			r := next[p]
			if syms[p] == dead || r < 0 {
				continue
			}
			m, ok := t.merges.get(syms[p], syms[r])
			if !ok || m.rank != rank {
				continue
			}
			syms[p] = m.result
			syms[r] = dead
			nr := next[r]
			next[p] = nr
			if nr >= 0 {
				prev[nr] = p
				if m2, ok := t.merges.get(syms[p], syms[nr]); ok {
					q.push(m2.rank, p)
				}
			}
			if pp := prev[p]; pp >= 0 {
				if m2, ok := t.merges.get(syms[pp], syms[p]); ok {
					q.push(m2.rank, pp)
				}
			}
		}
		q.release(batch)
	}
	w := 0
	for i := int32(0); i >= 0; i = next[i] {
		syms[w] = syms[i]
		w++
	}
	return syms[:w]
}

// rankQueue holds queued pair positions grouped by rank, and hands out the
// group of the lowest rank. Appending to a group is cheap and cache
// friendly; only the distinct ranks, far fewer than the candidates, go
// through a heap.
type rankQueue struct {
	group    map[int32]int // rank -> index in lists
	lists    []rankList
	free     [][]int32 // emptied lists, for reuse
	ranks    []int32   // min-heap of the ranks in group
	lastRank int32     // the rank and list of the previous push: runs of
	lastList int       // equal pairs push the same rank repeatedly
}

func (q *rankQueue) push(rank, pos int32) {
	if q.group != nil && rank == q.lastRank {
		l := &q.lists[q.lastList]
		l.pos = append(l.pos, pos)
		return
	}
	if q.group == nil {
		q.group = make(map[int32]int)
	}
	k, ok := q.group[rank]
	if !ok {
		k = len(q.lists)
		var list []int32
		if n := len(q.free); n > 0 {
			list, q.free = q.free[n-1][:0], q.free[:n-1]
		}
		q.lists = append(q.lists, rankList{rank, list})
		q.group[rank] = k
		q.pushRank(rank)
	}
	l := &q.lists[k]
	l.pos = append(l.pos, pos)
	q.lastRank, q.lastList = rank, k
}

// pop removes the group of the lowest rank and returns its positions in
// increasing order. Pass the slice to release when done with it.
func (q *rankQueue) pop() (int32, []int32, bool) {
	if len(q.ranks) == 0 {
		return 0, nil, false
	}
	rank := q.popRank()
	k := q.group[rank]
	delete(q.group, rank)
	list := q.lists[k].pos
	// Keep lists dense: move the last group into the freed slot.
	last := len(q.lists) - 1
	if k != last {
		q.lists[k] = q.lists[last]
		q.group[q.lists[k].rank] = k
	}
	q.lists = q.lists[:last]
	q.lastRank, q.lastList = -1, -1
	slices.Sort(list)
	return rank, list, true
}

// rankList is the queued positions of one rank.
type rankList struct {
	rank int32
	pos  []int32
}

func (q *rankQueue) release(list []int32) { q.free = append(q.free, list) }

func (q *rankQueue) pushRank(r int32) {
	q.ranks = append(q.ranks, r)
	h := q.ranks
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if h[parent] <= h[i] {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func (q *rankQueue) popRank() int32 {
	h := q.ranks
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	q.ranks = h
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r] < h[l] {
			m = r
		}
		if h[i] <= h[m] {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return top
}
