package loadtest

import (
	"math"
	"slices"
	"testing"
	"time"
)

func f(v float64) *float64 { return &v }
func yes() *bool           { b := true; return &b }

func partsOf(b *Breakdown) map[string]float64 {
	m := map[string]float64{}
	for _, p := range b.Parts {
		m[p.Name] = p.MS
	}
	return m
}

func TestBreakdown(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms float64) time.Time { return t0.Add(dur(ms)) }
	tests := []struct {
		name      string
		trace     coldTrace
		total     float64
		want      map[string]float64
		unaccount float64
		missing   int
	}{{
		// Lambda: invoke at 0; the runtime's main starts at 20 (its init
		// line at 520 says init_ms 500), spends 5 before the generator;
		// the load reports 10+20+100+300 of a 490 total; the invocation
		// starts at 530 (line at 1030, duration 500) and generates for
		// 498; the response arrives at 1034.
		name: "rie",
		trace: coldTrace{
			target: TargetRIE, start: at(0), sent: at(0), done: at(1034), generationMS: 498,
			log: processLog{
				load:        &logLine{Time: at(519), OpenMS: f(10), LoadMS: f(20), CompileMS: f(100), WarmupMS: f(300), TotalMS: f(490)},
				runtimeInit: &logLine{Time: at(520), InitMS: f(500), GeneratorMS: f(495)},
				firstCall:   &logLine{Time: at(1030), DurationMS: f(500), Cold: yes()},
			},
		},
		total: 1034,
		want: map[string]float64{
			PartSpawn: 20, PartRuntimeInit: 5, PartOpen: 10, PartLoad: 20, PartCompile: 100, PartWarmup: 300,
			PartLoadOther: 60, PartHandshake: 10, PartGeneration: 498, PartReturn: 4,
		},
		// 1034 - (20+5+490+10+498+4): the generator beyond the load (5)
		// and the invocation beyond the generation (2).
		unaccount: 7,
	}, {
		// HTTP: process started at 0, listening at 15, the load (total
		// 400) ends with the ready line at 420, the request goes out at
		// 425 and comes back at 730 with a 300 ms generation.
		name: "http",
		trace: coldTrace{
			target: TargetHTTP, start: at(0), sent: at(425), done: at(730), generationMS: 300,
			log: processLog{
				serving: &logLine{Time: at(15)},
				load:    &logLine{Time: at(420), OpenMS: f(10), LoadMS: f(20), CompileMS: f(70), WarmupMS: f(290), TotalMS: f(400)},
			},
		},
		total: 730,
		want: map[string]float64{
			PartSpawn: 15, PartOpen: 10, PartLoad: 20, PartCompile: 70, PartWarmup: 290, PartLoadOther: 10,
			PartReadyWait: 5, PartGeneration: 300, PartReturn: 5,
		},
		// The load began at 20, five after the listener: the backend.
		unaccount: 5,
	}, {
		name: "rie without logs",
		trace: coldTrace{
			target: TargetRIE, start: at(0), sent: at(0), done: at(900), generationMS: 400,
		},
		total:     900,
		want:      map[string]float64{PartGeneration: 400},
		unaccount: 500,
		missing:   3,
	}, {
		name: "http failed generation",
		trace: coldTrace{
			target: TargetHTTP, start: at(0), sent: at(425), done: at(430), generationMS: math.NaN(),
			log: processLog{
				serving: &logLine{Time: at(15)},
				load:    &logLine{Time: at(420), OpenMS: f(10), LoadMS: f(20), CompileMS: f(70), WarmupMS: f(290), TotalMS: f(400)},
			},
		},
		total: 430,
		want: map[string]float64{
			PartSpawn: 15, PartOpen: 10, PartLoad: 20, PartCompile: 70, PartWarmup: 290, PartLoadOther: 10, PartReadyWait: 5,
		},
		unaccount: 10,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.trace.breakdown()
			if math.Abs(b.TotalMS-tt.total) > 1e-6 {
				t.Errorf("total = %v, want %v", b.TotalMS, tt.total)
			}
			got := partsOf(b)
			if len(got) != len(tt.want) {
				t.Errorf("parts = %v, want %v", got, tt.want)
			}
			for name, want := range tt.want {
				if math.Abs(got[name]-want) > 1e-6 {
					t.Errorf("%s = %v, want %v", name, got[name], want)
				}
			}
			if math.Abs(b.UnaccountedMS-tt.unaccount) > 1e-6 {
				t.Errorf("unaccounted = %v, want %v", b.UnaccountedMS, tt.unaccount)
			}
			if len(b.Missing) != tt.missing {
				t.Errorf("missing = %q, want %d entries", b.Missing, tt.missing)
			}
			sum := b.UnaccountedMS
			for _, p := range b.Parts {
				sum += p.MS
			}
			if math.Abs(sum-b.TotalMS) > 1e-6 {
				t.Errorf("parts + unaccounted = %v, total %v", sum, b.TotalMS)
			}
		})
	}
}

func TestBreakdownOrder(t *testing.T) {
	t0 := time.Now()
	b := coldTrace{target: TargetHTTP, start: t0, sent: t0, done: t0, generationMS: 1,
		log: processLog{serving: &logLine{Time: t0}, load: &logLine{Time: t0, OpenMS: f(0), LoadMS: f(0), CompileMS: f(0), WarmupMS: f(0), TotalMS: f(0)}},
	}.breakdown()
	var names []string
	for _, p := range b.Parts {
		names = append(names, p.Name)
	}
	want := []string{PartSpawn, PartOpen, PartLoad, PartCompile, PartWarmup, PartLoadOther, PartReadyWait, PartGeneration, PartReturn}
	if !slices.Equal(names, want) {
		t.Errorf("parts in order %v, want %v", names, want)
	}
}

func TestMeanBreakdown(t *testing.T) {
	if meanBreakdown(nil) != nil {
		t.Error("mean of nothing is not nil")
	}
	got := meanBreakdown([]*Breakdown{
		{TotalMS: 100, Parts: []Part{{"a", 10}, {"b", 80}}, UnaccountedMS: 10},
		{TotalMS: 200, Parts: []Part{{"a", 30}, {"c", 150}}, UnaccountedMS: 20},
	})
	want := &Breakdown{TotalMS: 150, Parts: []Part{{"a", 20}, {"b", 80}, {"c", 150}}, UnaccountedMS: 15}
	if got.TotalMS != want.TotalMS || got.UnaccountedMS != want.UnaccountedMS || !slices.Equal(got.Parts, want.Parts) {
		t.Errorf("meanBreakdown = %+v, want %+v", got, want)
	}
}
