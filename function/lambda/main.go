package lambda

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	awslambda "github.com/aws/aws-lambda-go/lambda"

	"github.com/controlfn/controlfn/function/server"
)

// InLambda reports whether the process runs as a Lambda runtime (under
// AWS Lambda or aws-lambda-rie), which is how a binary installed as
// "bootstrap" knows to call Main.
func InLambda() bool { return os.Getenv(EnvRuntimeAPI) != "" }

// Main is the Lambda runtime: it reads the configuration from the
// environment (unless opts.Config is set), creates the object store,
// calls newGenerator once to load the warm model, and serves invocations
// until the runtime API goes away; then aws-lambda-go ends the process.
// It returns only when it cannot start: outside Lambda, on a bad
// configuration or when the model does not load, errors after which
// the process should exit non-zero (Lambda then reports the init failure
// and retries it on the next invocation).
func Main(newGenerator func() (server.Generator, error), opts Options) error {
	start := time.Now()
	if !InLambda() {
		return fmt.Errorf("lambda: %s is not set: run under AWS Lambda or aws-lambda-rie", EnvRuntimeAPI)
	}
	if newGenerator == nil {
		return errors.New("lambda: no generator constructor")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	log := opts.Logger
	if opts.Config == nil {
		cfg, err := ConfigFromEnv()
		if err != nil {
			return err
		}
		opts.Config = &cfg
	} else if err := opts.Config.Validate(); err != nil {
		return fmt.Errorf("lambda: configuration: %w", err)
	}
	if opts.Store == nil {
		store, err := NewS3Store(context.Background(), S3Options{Endpoint: opts.Config.S3Endpoint, PathStyle: opts.Config.S3PathStyle})
		if err != nil {
			return err
		}
		opts.Store = store
	}
	genStart := time.Now()
	gen, err := newGenerator()
	if err == nil && gen == nil {
		err = errors.New("the constructor returned no generator")
	}
	if err != nil {
		log.Error("init failed", "error", err.Error(), "init_ms", ms(time.Since(start)))
		return fmt.Errorf("lambda: loading the model: %w", err)
	}
	opts.InitDuration = time.Since(start)
	log.Info("init",
		"init_ms", ms(opts.InitDuration),
		"generator_ms", ms(time.Since(genStart)),
		"build_id", gen.Info().BuildID)
	awslambda.StartHandler(NewHandler(gen, opts))
	return nil // not reached: StartHandler exits the process when it stops
}
