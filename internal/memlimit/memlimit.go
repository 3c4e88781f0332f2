// Package memlimit paces Go's garbage collector on the memory a process
// works with, not on the model it keeps.
//
// On the pure-Go backend the weights are live Go-heap memory. GOGC sets the
// next collection at live heap × (1 + GOGC/100), so with a model of 3 GiB
// (fp16) or 6 GiB (fp32) a generation piled up that much garbage and pooled
// backend buffers before the first collection: at 256×256 no collection
// ran during a whole generation, and the bigger fp32 model was allowed
// twice the working memory of the fp16 one. Lowering GOGC does not help
// (measured): the goal stays proportional to the weights, and gobackend's
// freed buffers wait in sync.Pools that look live to the collector until
// the second collection after they were pooled, so the live heap itself
// grows during a generation.
//
// Pace measures the live heap once the model is loaded (the baseline) and
// from then on keeps a soft memory limit (debug.SetMemoryLimit) at
//
//	max(baseline + headroom, live + floor)
//
// plus the runtime's own overhead, moved after every collection. The
// headroom is what the running generation needs above the weights
// (Reserve): collections come often enough that pooled buffers nobody
// reuses are dropped. The floor keeps the limit above what is live, so a
// generation that needs more than its headroom gets a collection every
// floor bytes allocated, never back-to-back collections the way a fixed
// limit below the working set makes them. The floor grows with the square
// root of the model's memory (Floor): the trade that makes an image
// cheapest where memory × time is paid.
package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// floorUnit, minFloor and maxFloor define Floor.
const (
	floorUnit = 10 << 20
	minFloor  = 32 << 20
	maxFloor  = 512 << 20
)

// Floor is the room Pace keeps above the live heap when not told: the
// geometric mean of the model's memory (the live heap when Pace is
// called) and 10 MiB, within 32–512 MiB. A lower floor lowers the peak
// by about c × floor and adds about k / floor of collection time, so
// (memory + c·floor) × (time + k/floor), what a function billed by
// memory × time pays per image, is least at floor = √(memory × k/(c·time)).
// SD1.5 on the Go backend measured k/(c·time) at 5–18 MiB (fp16 weights,
// 512² and 256²), hence 10 MiB: 177 MiB for fp16 weights (3.1 GiB live),
// 248 MiB for fp32 (6.0 GiB). A bigger model's collections cost more time
// for the same floor, and with float32 weights the heap's free pages eat
// more of it: fp32 at 177 MiB ran 1280 collections per 256² image instead
// of 250, 20–30% slower, where fp16 ran ≤ 4% slower for 0.12–0.2 GiB less
// (docs/BENCHMARKS.md).
func Floor(model uint64) uint64 {
	f := uint64(math.Sqrt(float64(model) * floorUnit))
	return min(max(f, minFloor), maxFloor)
}

var (
	mu      sync.Mutex
	current *Pacer
)

// Pacer is the pacing one Pace call set up.
type Pacer struct {
	baseline  uint64 // live heap when Pace was called
	overhead  uint64 // memory the runtime held beyond the live heap, then
	floor     uint64
	percent   int   // GOGC
	userLimit int64 // the limit Pace found (GOMEMLIMIT), restored by Stop
	// The rest is guarded by mu.
	stopped bool
	// reserved are the headrooms of the generations running or waiting;
	// the largest is the headroom.
	reserved map[*int]uint64
}

// read returns the live heap (as of the last collection) and the memory
// the runtime holds from the OS.
func read() (live, held uint64) {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64() - s[2].Value.Uint64()
}

// Pace collects, returns free memory to the OS, takes the live heap as
// the baseline and keeps the memory limit at max(baseline + headroom,
// live + floor) plus the runtime's other memory, updated after every
// collection; the headroom is the largest Reserve outstanding. Call it
// once a model is loaded; a later call replaces the pacing (the last model
// loaded is the one that stays). GOGC scales headroom and floor (GOGC=200
// doubles them); under GOGC=off nothing is paced and Pace returns nil. A
// limit set before (GOMEMLIMIT) stays a ceiling. floor ≤ 0 means
// Floor(live heap).
func Pace(floor int64) *Pacer {
	mu.Lock()
	defer mu.Unlock()
	var userLimit int64
	if current != nil {
		userLimit = current.userLimit
		current.stopped = true
		current = nil
		debug.SetMemoryLimit(userLimit)
	} else {
		userLimit = debug.SetMemoryLimit(-1)
	}
	// A collection, and the freed memory back to the OS, so that what the
	// runtime holds beyond the live heap is its own overhead.
	debug.FreeOSMemory()
	percent := debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	if percent < 0 {
		return nil
	}
	live, held := read()
	f := Floor(live)
	if floor > 0 {
		f = uint64(floor)
	}
	p := &Pacer{
		baseline:  live,
		floor:     scale(f, percent),
		percent:   percent,
		userLimit: userLimit,
		reserved:  map[*int]uint64{},
	}
	if held > live {
		p.overhead = held - live
	}
	current = p
	p.update(live)
	p.arm()
	return p
}

func scale(n uint64, percent int) uint64 {
	if percent == 100 {
		return n
	}
	return uint64(float64(n) * float64(percent) / 100)
}

// BetweenPrograms is called between two programs whose buffers differ in
// size: the denoising steps, then the VAE decoder. gobackend keeps a freed
// buffer in a per-size sync.Pool until the second collection after it was
// pooled, and a program its pools mostly serve allocates little, so few
// collections run during it: at 256×256 the steps' pooled buffers were
// still reachable beside the decoder's own. Under an active Pacer it
// collects twice (tens of milliseconds with a loaded model, once a
// generation); without one it does nothing.
func BetweenPrograms() {
	mu.Lock()
	active := current != nil
	mu.Unlock()
	if active {
		runtime.GC()
		runtime.GC()
	}
}

// Stop restores the memory limit Pace found, unless a later Pace call
// replaced p. A nil Pacer does nothing.
func (p *Pacer) Stop() {
	if p == nil {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	if current != p {
		return
	}
	p.stopped = true
	current = nil
	debug.SetMemoryLimit(p.userLimit)
}

// Reserve makes room for a generation needing about bytes above the
// weights until release is called; call it before the generation waits
// for its turn. A nil Pacer reserves nothing.
func (p *Pacer) Reserve(bytes int64) (release func()) {
	if p == nil {
		return func() {}
	}
	key := new(int)
	mu.Lock()
	defer mu.Unlock()
	p.reserved[key] = scale(uint64(max(bytes, 0)), p.percent)
	if !p.stopped {
		p.update(p.live())
	}
	return func() {
		mu.Lock()
		defer mu.Unlock()
		delete(p.reserved, key)
		if !p.stopped {
			p.update(p.live())
		}
	}
}

func (p *Pacer) live() uint64 {
	live, _ := read()
	return live
}

// limit is the memory limit p wants for a live heap; mu is held.
func (p *Pacer) limit(live uint64) int64 {
	var headroom uint64
	for _, r := range p.reserved {
		headroom = max(headroom, r)
	}
	l := max(p.baseline+headroom, live+p.floor) + p.overhead
	if l > math.MaxInt64 {
		return math.MaxInt64
	}
	return min(int64(l), p.userLimit)
}

// update sets the limit for a live heap; mu is held.
func (p *Pacer) update(live uint64) { debug.SetMemoryLimit(p.limit(live)) }

// sentinel is garbage as soon as it is armed, so its finalizer runs after
// the next collection. It is big enough to stay out of the tiny allocator,
// whose objects may never be finalized.
type sentinel struct {
	_ *sentinel
	_ [32]byte
}

// arm updates the limit after the next collection, and again after each
// one until p is stopped.
func (p *Pacer) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		mu.Lock()
		defer mu.Unlock()
		if p.stopped {
			return
		}
		p.update(p.live())
		p.arm()
	})
}
