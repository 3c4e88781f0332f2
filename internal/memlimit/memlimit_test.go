package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

func TestPaceReserveStop(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	// A model: 64 MiB that stays live.
	model := make([]byte, 64<<20)
	p := Pace(32 << 20)
	if p == nil {
		t.Skip("GOGC=off")
	}
	defer p.Stop()
	idle := debug.SetMemoryLimit(-1)
	if idle >= before || idle < int64(len(model)) {
		t.Fatalf("limit after Pace = %d, want between the model (%d) and the previous limit (%d)", idle, len(model), before)
	}
	release := p.Reserve(512 << 20)
	busy := debug.SetMemoryLimit(-1)
	if busy < idle+400<<20 {
		t.Fatalf("limit with 512 MiB reserved = %d, want ≥ %d", busy, idle+400<<20)
	}
	release()
	if got := debug.SetMemoryLimit(-1); got >= busy {
		t.Fatalf("limit after release = %d, want < %d", got, busy)
	}

	// The limit follows the live heap after collections: with more live
	// than the headroom it stays a floor above it.
	extra := make([]byte, 256<<20)
	for i := range extra {
		extra[i] = 1
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) < idle+200<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("limit %d did not follow a live heap grown by 256 MiB", debug.SetMemoryLimit(-1))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(extra)
	runtime.KeepAlive(model)

	p.Stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("limit after Stop = %d, want the previous %d", got, before)
	}
	// A stopped Pacer reserves nothing and a nil one is harmless.
	p.Reserve(1 << 30)()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("a stopped Pacer moved the limit to %d", got)
	}
	var none *Pacer
	none.Reserve(1)()
	none.Stop()
}

func TestPaceKeepsUserLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	debug.SetMemoryLimit(1 << 30)
	p := Pace(0)
	if p == nil {
		t.Skip("GOGC=off")
	}
	defer p.Stop()
	defer p.Reserve(math.MaxInt64 / 2)()
	if got := debug.SetMemoryLimit(-1); got > 1<<30 {
		t.Fatalf("limit %d above the one set before Pace", got)
	}
}

func TestPaceGCOff(t *testing.T) {
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	before := debug.SetMemoryLimit(-1)
	if p := Pace(0); p != nil {
		p.Stop()
		t.Fatal("Pace under GOGC=off returned a Pacer")
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("Pace under GOGC=off moved the limit to %d", got)
	}
}

// Between programs an active pacer empties sync.Pools (two collections);
// without one nothing is collected.
func TestBetweenPrograms(t *testing.T) {
	var pool sync.Pool
	pool.Put(make([]byte, 1<<20))
	BetweenPrograms()
	if pool.Get() == nil {
		t.Fatal("a pooled buffer was dropped with no pacer active")
	}
	p := Pace(0)
	if p == nil {
		t.Skip("GOGC=off")
	}
	defer p.Stop()
	pool.Put(make([]byte, 1<<20))
	BetweenPrograms()
	if pool.Get() != nil {
		t.Fatal("a pooled buffer survived BetweenPrograms under a pacer")
	}
}

// Floor is the geometric mean of the model's memory and 10 MiB, clamped.
func TestFloor(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ model, want uint64 }{
		{0, 32 * mib},
		{10 * mib, 32 * mib}, // √(10·10) = 10 MiB, below the least floor
		{1000 * mib, 100 * mib},
		{2560 * mib, 160 * mib},
		{25000 * mib, 500 * mib},
		{100 << 30, 512 * mib},
	} {
		if got := Floor(c.model); got != c.want {
			t.Errorf("Floor(%d MiB) = %d MiB, want %d", c.model/mib, got/mib, c.want/mib)
		}
	}
}
