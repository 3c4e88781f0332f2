package tokenizer

import (
	"hash/maphash"
	"sync"
)

// The BPE cache is bounded because prompts are untrusted: a server must not
// grow with every distinct word it is sent. Only words up to maxCachedWord
// bytes are cached (longer ones are rare and still fast to merge), in
// cacheShards shards of two generations of at most cacheGeneration entries:
// at most 32 Ki entries, each a key of at most 48 bytes and at most 48 ids,
// so about 10 MiB in the worst case and far less for real prompts.
const (
	maxCachedWord   = 48
	cacheShards     = 32
	cacheGeneration = 512
)

// bpeCache maps a pre-split token to its ids. Each shard keeps a current and
// a previous generation; when the current one fills it becomes the previous
// one and the old previous one is dropped, so recently used words survive at
// O(1) cost without per-entry bookkeeping.
type bpeCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu       sync.Mutex
	cur, old map[string][]int32
}

func newBPECache() *bpeCache {
	return &bpeCache{seed: maphash.MakeSeed()}
}

// maphash.Bytes and maphash.String agree on equal contents, so get and put
// pick the same shard.
func (c *bpeCache) shardOf(h uint64) *cacheShard { return &c.shards[h%cacheShards] }

// get returns the cached ids for key. The slice is shared: callers copy it.
func (c *bpeCache) get(key []byte) ([]int32, bool) {
	s := c.shardOf(maphash.Bytes(c.seed, key))
	s.mu.Lock()
	defer s.mu.Unlock()
	if ids, ok := s.cur[string(key)]; ok {
		return ids, true
	}
	ids, ok := s.old[string(key)]
	if ok {
		s.add(string(key), ids)
	}
	return ids, ok
}

// put stores ids, which the cache then owns.
func (c *bpeCache) put(key string, ids []int32) {
	s := c.shardOf(maphash.String(c.seed, key))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(key, ids)
}

func (s *cacheShard) add(key string, ids []int32) {
	if s.cur == nil || len(s.cur) >= cacheGeneration {
		s.old = s.cur
		s.cur = make(map[string][]int32, cacheGeneration)
	}
	s.cur[key] = ids
}
