package loadtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnvRIE names the aws-lambda-rie binary when it is not on PATH.
const EnvRIE = "CONTROLFN_RIE"

// DefaultPattern is the mixed mode's default arrivals: two bursts with an
// idle gap longer than the default idle timeout between them.
const DefaultPattern = "4@1s,gap 5s,4@1s"

// Command is `controlfn loadtest`: it parses args, runs the load test and
// writes the report files into --out, printing the summary. It fails when
// the run cannot start or when no request at all succeeded; otherwise the
// report says what went wrong.
func Command(args []string) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	target := fs.String("target", TargetRIE, "what to drive: rie (controlfn lambda under aws-lambda-rie) or http (controlfn serve)")
	bundle := fs.String("bundle", "", "bundle folder: the tool starts the processes itself")
	rawURL := fs.String("url", "", "base URL of a running target instead (loopback only; warm mode only)")
	modes := fs.String("mode", "cold,warm", "modes to run in order, comma-separated: cold, warm, mixed (with --url: warm)")
	cold := fs.Int("cold", 5, "cold mode: cold starts to measure, one process each")
	requests := fs.Int("requests", 50, "warm mode: requests to send")
	concurrency := fs.Int("concurrency", 1, "warm mode: concurrent clients (http: all on one process, which answers 429 when busy; rie: one process each)")
	pattern := fs.String("pattern", DefaultPattern, "mixed mode: arrivals, e.g. '5@200ms,gap 2s,5@200ms' (COUNT@INTERVAL, gap DURATION)")
	idle := fs.Duration("idle-timeout", 2*time.Second, "mixed mode: a process idle this long is stopped (Lambda reclaiming it)")
	maxInst := fs.Int("max-instances", 4, "mixed mode: most processes at once; arrivals beyond are throttled")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole run; what it cuts off is reported")
	out := fs.String("out", "out/loadtest", "folder for report.json, latency.png, summary.md and logs/")
	bin := fs.String("bin", "", "controlfn binary to start (default: this one)")
	rie := fs.String("rie", "", "aws-lambda-rie binary (default: $"+EnvRIE+", PATH, or next to controlfn)")
	steps := fs.Int("steps", 4, "num_inference_steps of every request")
	prompt := fs.String("prompt", "a photo of a red cube on a wooden table", "prompt of every request")
	seed := fs.Uint64("seed", 42, "seed of every request")
	control := fs.String("control-image", "", "control image (PNG/JPEG) of every request (default: a generated edge map)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn loadtest (--bundle DIR | --url URL) [flags]\n\n"+
			"Measures the function from outside: cold starts with their breakdown, warm\n"+
			"latency and throughput, or a scripted arrival pattern; writes JSON, a PNG plot\n"+
			"and a markdown summary into --out.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := Config{
		Target:       *target,
		Bundle:       *bundle,
		URL:          *rawURL,
		Bin:          *bin,
		RIE:          *rie,
		Cold:         *cold,
		Requests:     *requests,
		Concurrency:  *concurrency,
		IdleTimeout:  *idle,
		MaxInstances: *maxInst,
		Timeout:      *timeout,
		Request:      RequestSpec{Prompt: *prompt, Steps: *steps, Seed: *seed},
		LogDir:       filepath.Join(*out, DirLogs),
	}
	modeSet := false
	fs.Visit(func(fl *flag.Flag) { modeSet = modeSet || fl.Name == "mode" })
	if *rawURL != "" && !modeSet {
		*modes = ModeWarm // a running target can only be measured warm
	}
	for m := range strings.SplitSeq(*modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Modes = append(cfg.Modes, m)
		}
	}
	for _, m := range cfg.Modes {
		if m == ModeMixed {
			arr, err := ParsePattern(*pattern)
			if err != nil {
				return err
			}
			cfg.Arrivals, cfg.Pattern = arr, *pattern
		}
	}
	if *control != "" {
		img, err := os.ReadFile(*control)
		if err != nil {
			return fmt.Errorf("control image: %w", err)
		}
		cfg.Request.ControlImage = img
	}
	if cfg.Bundle != "" {
		if err := findBinaries(&cfg); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := WriteFiles(*out, rep); err != nil {
		return err
	}
	if err := WriteMarkdown(os.Stdout, rep); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s, %s and %s in %s\n", FileJSON, FilePlot, FileSummary, *out)
	for _, p := range rep.Phases {
		if p.OK > 0 {
			return nil
		}
	}
	return errors.New("no request succeeded: see the errors above and the process logs")
}

// findBinaries fills in the controlfn and emulator binaries left unset.
func findBinaries(cfg *Config) error {
	if cfg.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the controlfn binary (pass --bin): %w", err)
		}
		cfg.Bin = exe
	}
	if cfg.Target != TargetRIE || cfg.RIE != "" {
		return nil
	}
	cfg.RIE = FindRIE(filepath.Dir(cfg.Bin))
	if cfg.RIE == "" {
		return fmt.Errorf("aws-lambda-rie not found: set --rie or $%s, put it on PATH, or install it: "+
			"go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@latest", EnvRIE)
	}
	return nil
}

// FindRIE returns the aws-lambda-rie binary named by $CONTROLFN_RIE, else
// the one on PATH, else one in dir; "" when there is none.
func FindRIE(dir string) string {
	if p := os.Getenv(EnvRIE); p != "" {
		return p
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	if p := filepath.Join(dir, "aws-lambda-rie"); isExecutable(p) {
		return p
	}
	return ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
