package server

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestMetrics(t *testing.T) {
	s := newTestServer(t, &fakeGen{}, Options{})
	for _, body := range []string{goodBody(t), goodBody(t), goodBody(t, `"width": 1024`)} {
		s.do(t, "POST", "/v1/generate", body)
	}
	s.do(t, "GET", "/healthz", "")
	r := s.do(t, "GET", "/metrics", "")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	text := string(r.body)
	for _, want := range []string{
		"controlfn_up 1\n",
		"controlfn_ready 1\n",
		`controlfn_build_info{build_id="` + testInfo.BuildID + `"} 1` + "\n",
		// The scrape itself is in flight.
		"controlfn_http_requests_in_flight 1\n",
		"controlfn_generations_in_flight 0\n",
		`controlfn_http_requests_total{route="generate",code="200"} 2` + "\n",
		`controlfn_http_requests_total{route="generate",code="400"} 1` + "\n",
		`controlfn_http_requests_total{route="healthz",code="200"} 1` + "\n",
		`controlfn_errors_total{kind="bad_request"} 1` + "\n",
		`controlfn_generate_duration_seconds_count{start="cold"} 1` + "\n",
		`controlfn_generate_duration_seconds_count{start="warm"} 1` + "\n",
		// The fake reports denoise at 1500 ms: above 1 s, within 2.5 s.
		`controlfn_stage_duration_seconds_bucket{stage="denoise",le="1"} 0` + "\n",
		`controlfn_stage_duration_seconds_bucket{stage="denoise",le="2.5"} 2` + "\n",
		`controlfn_stage_duration_seconds_sum{stage="denoise"} 3` + "\n",
		`controlfn_stage_duration_seconds_count{stage="decode"} 2` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	checkExposition(t, text)
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$`)
	leRE     = regexp.MustCompile(`le="([^"]+)"`)
)

// checkExposition checks the text format: every sample parses, belongs to
// a family declared by HELP and TYPE before it, and histogram buckets are
// cumulative up to +Inf, which equals _count.
func checkExposition(t *testing.T, text string) {
	t.Helper()
	types := map[string]string{}
	var prevBucket float64
	var prevSeries string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("malformed sample %q", line)
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Errorf("sample %q: value: %v", line, err)
		}
		name := m[1]
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && types[base] == "histogram" {
				family = base
			}
		}
		if types[family] == "" {
			t.Errorf("sample %q before its TYPE", line)
		}
		if strings.HasSuffix(name, "_bucket") {
			series := leRE.ReplaceAllString(m[2], "")
			if series != prevSeries {
				prevBucket, prevSeries = 0, series
			}
			if v < prevBucket {
				t.Errorf("bucket %q below the previous (%g)", line, prevBucket)
			}
			prevBucket = v
		}
	}
}

func TestHistogramBounds(t *testing.T) {
	var h histogram
	for _, s := range []float64{0, 0.005, 0.0051, 300, 301} {
		h.observe(s)
	}
	if h.counts[0] != 2 || h.counts[1] != 1 || h.counts[len(h.counts)-1] != 1 || h.count != 5 {
		t.Errorf("counts %v, count %d", h.counts, h.count)
	}
}

func TestStageLabelsBounded(t *testing.T) {
	m := newMetrics(testStart)
	stages := map[string]float64{}
	for i := range 2 * maxStages {
		stages["s"+strconv.Itoa(i)] = 1
	}
	m.generation(true, 0, stages)
	if len(m.stages) != maxStages {
		t.Errorf("%d stage series, want at most %d", len(m.stages), maxStages)
	}
}
