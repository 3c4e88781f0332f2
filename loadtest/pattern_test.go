package loadtest

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in   string
		want []time.Duration
	}{
		{"3@100ms", ms(0, 100, 200)},
		{"1", ms(0)},
		{"3", ms(0, 0, 0)},
		{"2@1s,2@1s", ms(0, 1000, 2000, 3000)},
		{"2@200ms,gap 2s,2@200ms", ms(0, 200, 2200, 2400)},
		{"2@200ms, gap2s ,2@200ms", ms(0, 200, 2200, 2400)},
		{"2@200ms,gap 1s,gap 500ms,1", ms(0, 200, 1700)},
		{"gap 1s,2@100ms", ms(1000, 1100)},
		{"1,gap 0s,1", ms(0, 0)},
		{"5@0.2s,gap 2s,5@0.2s", ms(0, 200, 400, 600, 800, 2800, 3000, 3200, 3400, 3600)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePattern(tt.in)
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParsePattern(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty"},
		{"  ", "empty"},
		{"0@1s", "COUNT >= 1"},
		{"-2@1s", "COUNT >= 1"},
		{"x@1s", "COUNT@INTERVAL"},
		{"5@", "missing duration"},
		{"5@fast", "bad duration"},
		{"5@-1s", "negative"},
		{"gap", "missing duration"},
		{"gap -1s,1", "negative"},
		{"2@1s,gap 1s", "ends with a gap"},
		{"2@1s,,1", "COUNT@INTERVAL"},
		{"100001", "above"},
		{"60000,60000", "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParsePattern(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePattern(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}
