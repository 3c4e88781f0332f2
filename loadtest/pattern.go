package loadtest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxArrivals bounds the requests one pattern may schedule, so a typo
// ("5000000@1ms") fails at parse time instead of exhausting memory.
const MaxArrivals = 100_000

// ParsePattern turns an arrival pattern into the offsets, from the start
// of the run, at which requests arrive. A pattern is a comma-separated
// list of segments:
//
//	N@I    N requests I apart (a Go duration; "N" alone means I = 0,
//	       all at once). The rhythm carries on: the next segment's first
//	       request comes I after this one's last, so "5@1s,5@1s" is "10@1s".
//	gap D  the next request comes D after the previous one (D is the
//	       idle time between them); consecutive gaps add up; a leading
//	       gap delays the first request.
//
// "5@200ms,gap 2s,5@200ms" sends five requests 200 ms apart, waits two
// seconds, then sends five more.
func ParsePattern(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty arrival pattern")
	}
	var (
		out   []time.Duration
		next  time.Duration // when the next request arrives
		last  time.Duration // when the previous one arrived
		inGap bool          // the previous segment was a gap
	)
	for seg := range strings.SplitSeq(s, ",") {
		seg = strings.TrimSpace(seg)
		if rest, ok := strings.CutPrefix(seg, "gap"); ok {
			d, err := parseDuration(strings.TrimSpace(rest))
			if err != nil {
				return nil, fmt.Errorf("arrival pattern segment %q: %w", seg, err)
			}
			if inGap {
				next += d
			} else {
				next = last + d
			}
			inGap = true
			continue
		}
		n, interval, err := parseBurst(seg)
		if err != nil {
			return nil, fmt.Errorf("arrival pattern segment %q: %w", seg, err)
		}
		if len(out)+n > MaxArrivals {
			return nil, fmt.Errorf("arrival pattern schedules more than %d requests", MaxArrivals)
		}
		for k := range n {
			if k > 0 {
				next += interval
			}
			out = append(out, next)
			last = next
		}
		next += interval
		inGap = false
	}
	if inGap { // a gap with no request after it says nothing
		return nil, fmt.Errorf("arrival pattern %q ends with a gap: no request follows it", s)
	}
	return out, nil
}

// parseBurst reads "N@I" or "N".
func parseBurst(seg string) (int, time.Duration, error) {
	count, every, hasEvery := strings.Cut(seg, "@")
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 {
		return 0, 0, fmt.Errorf("want COUNT@INTERVAL (COUNT >= 1, e.g. 5@200ms) or gap DURATION")
	}
	if n > MaxArrivals {
		return 0, 0, fmt.Errorf("count %d is above %d", n, MaxArrivals)
	}
	if !hasEvery {
		return n, 0, nil
	}
	d, err := parseDuration(strings.TrimSpace(every))
	if err != nil {
		return 0, 0, err
	}
	return n, d, nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("missing duration (e.g. 2s, 500ms)")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (e.g. 2s, 500ms)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %s", s)
	}
	return d, nil
}
