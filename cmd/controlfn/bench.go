package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/service"
	"github.com/controlfn/controlfn/kernels/nn"
)

// benchRun is what one measured process reports.
type benchRun struct {
	Precision   string             `json:"precision"`
	Width       int                `json:"width"`
	Height      int                `json:"height"`
	Steps       int                `json:"steps"`
	ColdStartMS map[string]float64 `json:"cold_start_ms"`
	StagesMS    schema.Timings     `json:"stages_ms"`
	StepMS      float64            `json:"step_ms"`
	// ControlNetMS and UNetMS time the step's halves as separate programs
	// (zero when not measured).
	ControlNetMS float64 `json:"controlnet_ms,omitempty"`
	UNetMS       float64 `json:"unet_ms,omitempty"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
	PeakAnon     int64   `json:"rss_anon_bytes"`
}

// runBench measures a bundle: cold start (open+verify, load, compile,
// which uploads weights) and one generation's stages, with fp32 weights on
// the device and with fp16 weights, each in its own process so that each
// peak RSS is its own. It prints a markdown table and can write it into a
// section of docs/BENCHMARKS.md.
func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	bundle := fs.String("bundle", "", "compiled bundle folder")
	size := fs.String("size", "", "WxH to generate (default: the bundle's first bucket)")
	steps := fs.Int("steps", 4, "denoising steps")
	precision := fs.String("precision", "both", "fp32 (widen at load), fp16 (keep stored), or both")
	jsonOut := fs.Bool("json", false, "measure once in this process and print JSON (used by the parent run)")
	section := fs.String("section", "", "name of the docs/BENCHMARKS.md section to replace (empty: print only)")
	out := fs.String("out", "docs/BENCHMARKS.md", "markdown file for --section")
	title := fs.String("title", "", "heading line for the table")
	backendSpec := fs.String("backend", "go", "compute backend: go, or xla:cuda in a -tags xla build")
	xlaCache := fs.Bool("xla-cache", false, "keep XLA's GPU kernel and autotune caches in the bundle's cache/ (xla backends; see serve --xla-cache)")
	parts := fs.Bool("parts", true, "also time the ControlNets and the UNet of one step as separate programs (after peak RSS is read)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bundle == "" {
		return errors.New("--bundle is required")
	}
	if *xlaCache && !strings.HasPrefix(*backendSpec, "xla") {
		return fmt.Errorf("--xla-cache needs an xla backend, not %q", *backendSpec)
	}
	if *jsonOut {
		r, err := measureOnce(benchOptions{bundle: *bundle, size: *size, steps: *steps, precision: *precision,
			backend: *backendSpec, xlaCache: *xlaCache, parts: *parts})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	precs := []string{*precision}
	if *precision == "both" {
		precs = []string{"fp32", "fp16"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var runs []benchRun
	for _, p := range precs {
		cmd := exec.Command(exe, "bench", "--json", "--bundle", *bundle, "--size", *size, "--steps", strconv.Itoa(*steps), "--precision", p, "--backend", *backendSpec,
			"--xla-cache="+strconv.FormatBool(*xlaCache), "--parts="+strconv.FormatBool(*parts))
		cmd.Stderr = os.Stderr
		data, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("bench %s: %w", p, err)
		}
		var r benchRun
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("bench %s: %w", p, err)
		}
		runs = append(runs, r)
	}
	report := benchMarkdown(*title, *backendSpec, runs)
	fmt.Print(report)
	if *section != "" {
		return replaceSection(*out, *section, report)
	}
	return nil
}

// benchOptions configure one measured process.
type benchOptions struct {
	bundle, size, precision, backend string
	steps                            int
	xlaCache, parts                  bool
}

func measureOnce(o benchOptions) (*benchRun, error) {
	bundle, size, steps, precision := o.bundle, o.size, o.steps, o.precision
	if o.xlaCache {
		// Before the backend: XLA reads its flags when the client starts.
		if _, err := service.EnableXLACache(bundle, service.GPUName()); err != nil {
			return nil, err
		}
	}
	backend, err := nn.NewBackend(o.backend)
	if err != nil {
		return nil, err
	}
	opts := service.LoadOptions{Backend: backend}
	switch precision {
	case "fp32":
		opts.Precision = nn.Widen
	case "fp16":
		opts.Precision = nn.KeepStored
	default:
		return nil, fmt.Errorf("--precision %q: want fp32, fp16 or both", precision)
	}
	svc, cs, err := service.LoadBundle(bundle, opts)
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	info := svc.Info()
	w, h := info.Buckets[0].Width, info.Buckets[0].Height
	if size != "" {
		b, err := parseBuckets(size, 1)
		if err != nil {
			return nil, err
		}
		w, h = b[0].Width, b[0].Height
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		return nil, err
	}
	req := schema.Request{Prompt: "a photo of a house", NegativePrompt: "blurry", Width: w, Height: h, Steps: steps,
		GuidanceScale: 7.5, Scheduler: "ddim", NumImages: 1, OutputFormat: "png", CannyLow: 100, CannyHigh: 200}
	seed := uint64(1)
	req.Seed = &seed
	for i := 0; i < info.ControlNets; i++ {
		req.ControlImages = append(req.ControlImages, schema.ControlImage{Data: buf.Bytes(), Format: "png", Width: w, Height: h})
		req.ControlType = append(req.ControlType, "none")
		req.ConditioningScale = append(req.ConditioningScale, 1)
		req.GuidanceStart = append(req.GuidanceStart, 0)
		req.GuidanceEnd = append(req.GuidanceEnd, 1)
	}
	resp, err := svc.Generate(context.Background(), req)
	if err != nil {
		return nil, err
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r := &benchRun{
		Precision: precision, Width: w, Height: h, Steps: steps,
		ColdStartMS: map[string]float64{"open_verify": ms(cs.Open), "load": ms(cs.Load), "compile_upload": ms(cs.Compile), "total": ms(cs.Total)},
		StagesMS:    resp.TimingsMS,
		StepMS:      resp.TimingsMS[schema.StageDenoise] / float64(steps),
		PeakRSS:     peakRSS(),
		PeakAnon:    statusBytes("RssAnon:"),
	}
	if o.parts {
		// After the peak is read: the separate programs are extra memory
		// a generation never holds.
		p, err := svc.TimeStepParts(w, h, 1)
		if err != nil {
			return nil, err
		}
		r.ControlNetMS, r.UNetMS = ms(p.ControlNets), ms(p.UNet)
	}
	return r, nil
}

func benchMarkdown(title, backendSpec string, runs []benchRun) string {
	var b strings.Builder
	if title != "" {
		fmt.Fprintf(&b, "%s\n\n", title)
	}
	backendDesc := fmt.Sprintf("Go backend (`%s`, GOEXPERIMENT=%s)", nn.GoBackendConfig, buildSetting("GOEXPERIMENT"))
	if backendSpec != "go" {
		backendDesc = "backend `" + backendSpec + "`"
	}
	fmt.Fprintf(&b, "Machine: %s, %s, %s.\n\n", cpuModel(), backendDesc, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "| weights on device | size | cold start: open+verify / load / compile+upload / total (s) | text enc (ms) | ControlNet / UNet alone (s) | step, fused (s) | steps/s | scheduler (ms/step) | VAE decode (s) | PNG (ms) | peak RSS (GiB) | anon RSS at end (GiB) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		cs := r.ColdStartMS
		parts := "—"
		if r.UNetMS > 0 {
			parts = fmt.Sprintf("%.2f / %.2f", r.ControlNetMS/1000, r.UNetMS/1000)
		}
		fmt.Fprintf(&b, "| %s | %dx%d | %.1f / %.1f / %.1f / %.1f | %.0f | %s | %.2f | %.3g | %.2f | %.2f | %.1f | %.2f | %.2f |\n",
			r.Precision, r.Width, r.Height, cs["open_verify"]/1000, cs["load"]/1000, cs["compile_upload"]/1000, cs["total"]/1000,
			r.StagesMS[schema.StageTextEncode], parts, r.StepMS/1000, 1000/r.StepMS, r.StagesMS[schema.StageScheduler]/float64(r.Steps),
			r.StagesMS[schema.StageVAEDecode]/1000, r.StagesMS[schema.StageEncode],
			float64(r.PeakRSS)/(1<<30), float64(r.PeakAnon)/(1<<30))
	}
	if len(runs) == 2 && runs[0].PeakRSS > 0 {
		fmt.Fprintf(&b, "\nfp16 / fp32 peak RSS: %.2f; fp16 / fp32 step time: %.2f.\n", float64(runs[1].PeakRSS)/float64(runs[0].PeakRSS), runs[1].StepMS/runs[0].StepMS)
	}
	return b.String()
}

// statusBytes reads a kB field of /proc/self/status in bytes.
func statusBytes(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
