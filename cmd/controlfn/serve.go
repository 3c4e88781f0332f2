package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/controlfn/controlfn/function/server"
	"github.com/controlfn/controlfn/function/service"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute"
)

// loadWarm is the cold start both front ends share: load the bundle at dir
// (reported as name), compile and warm it, and log one line, named msg, with
// the breakdown (the load test reads it: "ready" for serve, "init" for
// lambda).
func loadWarm(name, dir string, backend compute.Backend, fp32, warm bool, logger *slog.Logger, msg string) (*service.Service, error) {
	opts := service.LoadOptions{Backend: backend, WarmUp: warm, Precision: nn.KeepStored}
	if fp32 {
		opts.Precision = nn.Widen
	}
	svc, cs, err := service.LoadBundle(dir, opts)
	if err != nil {
		return nil, err
	}
	logger.Info(msg, "bundle", name, "build_id", svc.Info().BuildID,
		"open_ms", cs.Open.Milliseconds(), "load_ms", cs.Load.Milliseconds(),
		"compile_ms", cs.Compile.Milliseconds(), "warmup_ms", cs.WarmUp.Milliseconds(), "total_ms", cs.Total.Milliseconds())
	return svc, nil
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	bundle := fs.String("bundle", "", "compiled bundle folder")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address HOST:PORT")
	backendSpec := fs.String("backend", "go", "compute backend: go, or xla:cuda in a -tags xla build")
	fp32 := fs.Bool("fp32-weights", false, "widen weights to fp32 on the device (twice the weight memory; see docs/BENCHMARKS.md)")
	warm := fs.Bool("warm-up", true, "run one warm-up generation per bucket before reporting ready")
	logPrompts := fs.Bool("log-prompts", false, "include prompt text in request logs (debug)")
	xlaCache := fs.Bool("xla-cache", os.Getenv("CONTROLFN_XLA_CACHE") == "1", "keep XLA's GPU kernel and autotune caches in the bundle's cache/ so the next cold start on this GPU compiles less (xla backends; $CONTROLFN_XLA_CACHE=1)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn serve --bundle DIR [--addr HOST:PORT]\n\nPOST /v1/generate, GET /healthz, /readyz, /metrics.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bundle == "" {
		fs.Usage()
		return errors.New("--bundle is required")
	}
	if *xlaCache && !strings.HasPrefix(*backendSpec, "xla") {
		return fmt.Errorf("--xla-cache needs an xla backend, not %q", *backendSpec)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ready := make(chan struct{})
	gen := &lateGenerator{}
	h := server.New(gen, server.Options{Logger: logger, Ready: ready, LogPrompts: *logPrompts})
	loadErr := make(chan error, 1)
	// Load in the background so /healthz answers during the cold start and
	// /readyz turns 200 only once the programs are warm.
	go func() {
		if *xlaCache {
			// XLA reads its flags when the backend's client is created.
			dir, err := service.EnableXLACache(*bundle, service.GPUName())
			if err != nil {
				loadErr <- err
				return
			}
			logger.Info("xla cache", "dir", dir)
		}
		backend, err := nn.NewBackend(*backendSpec)
		if err != nil {
			loadErr <- err
			return
		}
		s, err := loadWarm(*bundle, *bundle, backend, *fp32, *warm, logger, "ready")
		if err != nil {
			loadErr <- err
			return
		}
		gen.set(s)
		close(ready)
	}()
	errc := make(chan error, 1)
	go func() { errc <- server.Run(ctx, *addr, h, server.ServeOptions{Logger: logger}) }()
	select {
	case err := <-loadErr:
		stop()
		<-errc
		return err
	case err := <-errc:
		gen.close()
		return err
	}
}
