// Command testbootstrap is the Lambda bootstrap of the front end's
// integration tests: function/lambda's Main around the fake generator,
// which the tests build and run under aws-lambda-rie.
//
// Environment: CONTROLFN_FAKE_INIT_DELAY (a duration slept in the
// constructor, to make the cold start visible), CONTROLFN_FAKE_STEP_DELAY
// (per step), CONTROLFN_FAKE_INIT_FAIL (non-empty: the constructor fails),
// and everything function/lambda's ConfigFromEnv reads.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/controlfn/controlfn/function/lambda"
	"github.com/controlfn/controlfn/function/lambda/internal/fakegen"
	"github.com/controlfn/controlfn/function/server"
)

func main() {
	if err := lambda.Main(newGenerator, lambda.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "testbootstrap:", err)
		os.Exit(1)
	}
}

func newGenerator() (server.Generator, error) {
	initDelay, err := duration("CONTROLFN_FAKE_INIT_DELAY")
	if err != nil {
		return nil, err
	}
	stepDelay, err := duration("CONTROLFN_FAKE_STEP_DELAY")
	if err != nil {
		return nil, err
	}
	time.Sleep(initDelay)
	if os.Getenv("CONTROLFN_FAKE_INIT_FAIL") != "" {
		return nil, errors.New("injected init failure")
	}
	return fakegen.New(fakegen.Options{StepDelay: stepDelay}), nil
}

func duration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}
