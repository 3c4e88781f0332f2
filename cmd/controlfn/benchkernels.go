package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/gomlx/gomlx/core/tensors"
)

// runBenchKernels times, on the Go backend, one classifier-free-guidance
// step (batch 2) of the full-size SD1.5 UNet + ControlNet with random
// weights, and the SD1.5 ResNet and transformer blocks at the four UNet
// resolutions; the blocks also run in PyTorch CPU (our script with the same
// math and thread count) for a ratio. The result is printed and written as
// a section of docs/BENCHMARKS.md.
func runBenchKernels(args []string) error {
	fs := flag.NewFlagSet("bench-kernels", flag.ContinueOnError)
	configs := fs.String("configs", filepath.Join("..", "shared", "sd15-configs"), "folder with the full-size unet/ and controlnet/ config.json")
	size := fs.Int("size", 256, "image size in pixels for the full step")
	blockSize := fs.Int("block-size", 512, "image size whose four UNet resolutions the blocks run at")
	repeat := fs.Int("repeat", 2, "timed runs per measurement (the best is reported)")
	python := fs.String("python", "python3", "python with torch for the block comparison (empty: skip)")
	script := fs.String("torch-script", filepath.Join("infra", "bench", "torch_blocks.py"), "the torch block script")
	out := fs.String("out", filepath.Join("docs", "BENCHMARKS.md"), "markdown file whose bench-kernels section is replaced (empty: print only)")
	skipStep := fs.Bool("skip-step", false, "skip the full-size step (blocks only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ucfg, err := unet.LoadConfig(filepath.Join(*configs, "unet", "config.json"))
	if err != nil {
		return err
	}
	ccfg, err := unet.LoadConfig(filepath.Join(*configs, "controlnet", "config.json"))
	if err != nil {
		return err
	}
	backend, err := nn.NewBackend("go")
	if err != nil {
		return err
	}
	threads := runtime.GOMAXPROCS(0)
	var report strings.Builder
	fmt.Fprintf(&report, "Machine: %s, %d threads, Go backend (`%s`, GOEXPERIMENT=%s), %s.\n\n",
		cpuModel(), threads, nn.GoBackendConfig, buildSetting("GOEXPERIMENT"), time.Now().UTC().Format("2006-01-02"))

	if !*skipStep {
		u, _ := unet.NewUNet(ucfg)
		cn, _ := unet.NewControlNet(ccfg)
		t0 := time.Now()
		uw := nn.NewWeights(backend, nn.RandomSource{Shapes: ucfg.WeightShapes(false), Seed: 1}, nn.Widen)
		cw := nn.NewWeights(backend, nn.RandomSource{Shapes: ccfg.WeightShapes(true), Seed: 2}, nn.Widen)
		lat := *size / 8
		sh := unet.StepShape{Batch: 2, LatentHeight: lat, LatentWidth: lat, SeqLen: 77, CondScale: 8, NumControlNet: 1}
		p, err := unet.CompileStep("sd15-step", u, uw, []*unet.ControlNet{cn}, []*nn.Weights{cw}, sh)
		if err != nil {
			return err
		}
		build := time.Since(t0)
		var argsT []*tensors.Tensor
		for _, s := range u.StepInputs(sh, []*unet.ControlNet{cn}) {
			argsT = append(argsT, tensors.FromShape(s))
		}
		t0 = time.Now()
		if _, err := p.Run(argsT...); err != nil {
			return err
		}
		first := time.Since(t0)
		best := time.Duration(1<<63 - 1)
		for i := 0; i < *repeat; i++ {
			t0 = time.Now()
			if _, err := p.Run(argsT...); err != nil {
				return err
			}
			best = min(best, time.Since(t0))
		}
		fmt.Fprintf(&report, "Full SD1.5 ControlNet + UNet step, %d×%d, batch 2 (CFG), fp32 weights:\n\n", *size, *size)
		fmt.Fprintf(&report, "| measure | value |\n|---|---|\n")
		fmt.Fprintf(&report, "| random weights + trace + compile | %.1f s |\n", build.Seconds())
		fmt.Fprintf(&report, "| first step (weight upload included) | %.1f s |\n", first.Seconds())
		fmt.Fprintf(&report, "| step, best of %d | **%.1f s** |\n", *repeat, best.Seconds())
		fmt.Fprintf(&report, "| diffusers on Debian torch 1.13 (measured by the issue author) | 17.9 s |\n")
		fmt.Fprintf(&report, "| ratio to diffusers (target ≤ 2.0) | %.2f |\n", best.Seconds()/17.9)
		fmt.Fprintf(&report, "| peak RSS | %.1f GiB |\n\n", float64(peakRSS())/(1<<30))
		fmt.Fprint(os.Stderr, report.String())
		p.Close()
		runtime.GC()
	}

	// Blocks at the four UNet resolutions of a blockSize image.
	type block struct {
		kind    string
		res, ch int
	}
	var blocks []block
	res := *blockSize / 8
	for _, ch := range ucfg.BlockOutChannels {
		blocks = append(blocks, block{unet.BlockResnet, res, ch}, block{unet.BlockTransformer, res, ch})
		res /= 2
	}
	goTimes := map[string]float64{}
	for _, b := range blocks {
		run, err := ucfg.CompileBlock(backend, b.kind, 2, b.res, b.ch, 77)
		if err != nil {
			return err
		}
		if err := run(); err != nil {
			return err
		}
		best := time.Duration(1<<63 - 1)
		for i := 0; i < *repeat; i++ {
			t0 := time.Now()
			if err := run(); err != nil {
				return err
			}
			best = min(best, time.Since(t0))
		}
		goTimes[fmt.Sprintf("%s_%d_%d", b.kind, b.res, b.ch)] = best.Seconds()
		fmt.Fprintf(os.Stderr, "go %s %dx%d×%d: %.3f s\n", b.kind, b.res, b.res, b.ch, best.Seconds())
	}
	torchTimes := map[string]float64{}
	torchNote := ""
	if *python != "" {
		specs := []string{"--threads", strconv.Itoa(threads), "--batch", "2", "--repeat", strconv.Itoa(*repeat)}
		for _, b := range blocks {
			specs = append(specs, fmt.Sprintf("%s:%d:%d", b.kind, b.res, b.ch))
		}
		cmd := exec.Command(*python, append([]string{*script}, specs...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		outBytes, err := cmd.Output()
		if err == nil {
			err = json.Unmarshal(outBytes, &torchTimes)
		}
		if err != nil {
			torchNote = fmt.Sprintf("PyTorch comparison unavailable: %v %s", err, strings.TrimSpace(stderr.String()))
			fmt.Fprintln(os.Stderr, torchNote)
		}
	}
	fmt.Fprintf(&report, "SD1.5 blocks for a %d×%d image, batch 2 (best of %d):\n\n", *blockSize, *blockSize, *repeat)
	fmt.Fprintf(&report, "| block | latent res × channels | Go (s) | PyTorch (s) | Go / PyTorch |\n|---|---|---|---|---|\n")
	for _, b := range blocks {
		key := fmt.Sprintf("%s_%d_%d", b.kind, b.res, b.ch)
		tt, ok := torchTimes[key]
		ts, ratio := "—", "—"
		if ok {
			ts, ratio = fmt.Sprintf("%.3f", tt), fmt.Sprintf("%.2f", goTimes[key]/tt)
		}
		fmt.Fprintf(&report, "| %s | %d×%d × %d | %.3f | %s | %s |\n", b.kind, b.res, b.res, b.ch, goTimes[key], ts, ratio)
	}
	if torchNote != "" {
		fmt.Fprintf(&report, "\n%s\n", torchNote)
	}
	fmt.Print(report.String())
	if *out == "" {
		return nil
	}
	return replaceSection(*out, "bench-kernels", report.String())
}

// replaceSection rewrites the part of a markdown file between
// <!-- name:start --> and <!-- name:end --> (appending it when absent),
// writing a temp file and renaming it so the file is never half-written.
func replaceSection(path, name, body string) error {
	start, end := "<!-- "+name+":start -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	section := start + "\n" + body + end
	text := string(old)
	i, j := strings.Index(text, start), strings.Index(text, end)
	if i >= 0 && j > i {
		text = text[:i] + section + text[j+len(end):]
	} else {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += "\n" + section + "\n"
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// buildSetting reads a build setting (GOEXPERIMENT is a build-time choice,
// not visible in the environment at run time).
func buildSetting(key string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == key {
				return s.Value
			}
		}
	}
	return "none"
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func peakRSS() int64 { return statusBytes("VmHWM:") }
