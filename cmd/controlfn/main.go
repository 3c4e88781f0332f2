// Command controlfn is the one binary of the project: each stage of the
// data flow (compile, generate, serve, lambda, eval, bench, loadtest) is a
// subcommand calling the same library packages.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/controlfn/controlfn/eval"
	"github.com/controlfn/controlfn/function/lambda"
	"github.com/controlfn/controlfn/loadtest"
)

type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{
	"bench-kernels": {"time the full-size SD1.5 ControlNet+UNet step and its blocks against PyTorch", runBenchKernels},
	"demo-model":    {"write the built-in tiny demo model (diffusers layout)", runDemoModel},
	"generate":      {"generate images from a bundle (or a model folder) and control images", runGenerate},
	"compile":       {"compile a checkpoint, ControlNets and LoRAs into a verified fp16 bundle", runCompile},
	"inspect":       {"print a bundle's manifest summary and verify every hash", runInspect},
	"eval":          {"compare the optimized (fp16, LoRA-merged) bundle with an fp32 reference: PSNR/SSIM/MS-SSIM and edge F1", eval.Command},
	"loadtest":      {"drive the server or the Lambda emulator: cold starts and their breakdown, warm latency, plots", loadtest.Command},
	"pack":          {"pack a bundle as .tar.zst for shipping", runPack},
	"unpack":        {"unpack and verify a packed bundle", runUnpack},
	"serve":         {"serve a bundle over HTTP (edge nodes)", runServe},
	"lambda":        {"run the AWS Lambda handler (also the bootstrap when AWS_LAMBDA_RUNTIME_API is set)", runLambda},
	"bench":         {"measure a bundle: cold start, stages, step time, peak RSS, fp32 vs fp16 weights", runBench},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: controlfn <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'controlfn <command> -h' for the flags of a command.\n")
}

// ensureNoAsyncPreempt re-executes the binary with GODEBUG
// asyncpreemptoff=1 unless it is set: built with GOEXPERIMENT=simd, the Go
// backend's math.Exp paths (SiLU, softmax, GELU) ran 30-200x slower at
// random with async preemption on, and //go:debug does not accept this
// setting, so the environment is the only switch.
func ensureNoAsyncPreempt() {
	godebug := os.Getenv("GODEBUG")
	if strings.Contains(godebug, "asyncpreemptoff=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env := append(os.Environ(), "GODEBUG="+godebug+"asyncpreemptoff=1")
	// On success Exec does not return; on failure we run as we are.
	_ = syscall.Exec(exe, os.Args, env)
}

func main() {
	ensureNoAsyncPreempt()
	// Deployed as the Lambda "bootstrap", the binary gets no arguments.
	if len(os.Args) < 2 && lambda.InLambda() {
		if err := runLambda(nil); err != nil {
			fmt.Fprintf(os.Stderr, "controlfn lambda: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "controlfn: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "controlfn %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
