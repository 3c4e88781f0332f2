package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/function/lambda"
	"github.com/controlfn/controlfn/function/server"
)

// EnvBundle names the bundle folder the Lambda function loads at init.
const EnvBundle = "CONTROLFN_BUNDLE"

func runLambda(args []string) error {
	fs := flag.NewFlagSet("lambda", flag.ContinueOnError)
	bundle := fs.String("bundle", os.Getenv(EnvBundle), "bundle folder, or s3://bucket/key of a packed bundle fetched into /tmp at init (default $"+EnvBundle+")")
	fp32 := fs.Bool("fp32-weights", os.Getenv("CONTROLFN_FP32_WEIGHTS") == "1", "widen weights to fp32 on the device (twice the weight memory)")
	warm := fs.Bool("warm-up", os.Getenv("CONTROLFN_WARM_UP") != "0", "run one warm-up generation per bucket during init")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: controlfn lambda [--bundle DIR]\n\nThe AWS Lambda handler (Function URL, API Gateway v2, direct invoke, SQS, S3).\nThe binary also runs as the Lambda bootstrap when AWS_LAMBDA_RUNTIME_API is set.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bundle == "" {
		return errors.New("no bundle: pass --bundle or set " + EnvBundle)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	load := func() (server.Generator, error) {
		dir := *bundle
		if strings.HasPrefix(dir, "s3://") {
			cfg, err := lambda.ConfigFromEnv()
			if err != nil {
				return nil, err
			}
			store, err := lambda.NewS3Store(context.Background(), lambda.S3Options{Endpoint: cfg.S3Endpoint, PathStyle: cfg.S3PathStyle})
			if err != nil {
				return nil, err
			}
			dir = filepath.Join(os.TempDir(), "controlfn-bundle")
			if _, err := store.FetchBundle(context.Background(), *bundle, dir); err != nil {
				return nil, err
			}
		}
		return loadWarm(*bundle, dir, nil, *fp32, *warm, logger, "init")
	}
	return lambda.Main(load, lambda.Options{Logger: logger})
}
