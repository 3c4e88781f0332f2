package lambda

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by ConfigFromEnv.
const (
	EnvInputBucket    = "CONTROLFN_INPUT_BUCKET"
	EnvInputPrefix    = "CONTROLFN_INPUT_PREFIX"
	EnvOutputBucket   = "CONTROLFN_OUTPUT_BUCKET"
	EnvOutputPrefix   = "CONTROLFN_OUTPUT_PREFIX"
	EnvS3Endpoint     = "CONTROLFN_S3_ENDPOINT"
	EnvS3PathStyle    = "CONTROLFN_S3_PATH_STYLE"
	EnvURLObjectKeys  = "CONTROLFN_URL_OBJECT_KEYS"
	EnvDeadlineMargin = "CONTROLFN_DEADLINE_MARGIN"
	EnvLogPrompts     = "CONTROLFN_LOG_PROMPTS"
	// EnvRuntimeAPI is set by Lambda (and aws-lambda-rie) for a runtime.
	EnvRuntimeAPI = "AWS_LAMBDA_RUNTIME_API"
)

// Defaults of Config.
const (
	DefaultInputPrefix  = "input/"
	DefaultOutputPrefix = "output/"
	// DefaultDeadlineMargin is the time kept back from the Lambda deadline
	// to answer after a generation is stopped: Lambda kills a runtime that
	// passes its deadline, losing the warm model and the reply.
	DefaultDeadlineMargin = 2 * time.Second
)

// Config is the deployment's configuration of the event sources, read
// from the environment by ConfigFromEnv.
type Config struct {
	// InputBucket is the bucket of control images that a direct invoke
	// or an SQS message names by key without a bucket.
	InputBucket string
	// InputPrefix selects the S3 objects whose creation triggers a
	// generation; other keys are ignored.
	InputPrefix string
	// OutputBucket receives the results of SQS and S3 events. Empty means
	// the source object's bucket for S3 events; SQS events then fail.
	OutputBucket string
	// OutputPrefix is prepended to every output key. Objects created under
	// it in the output bucket never trigger a generation, so that outputs
	// written beside the inputs do not loop.
	OutputPrefix string
	// S3Endpoint overrides the object storage endpoint (MinIO,
	// LocalStack); empty means AWS S3 in the region of the environment.
	S3Endpoint string
	// S3PathStyle addresses buckets as a path (http://host/bucket/key),
	// which S3-compatible servers need; set by default with S3Endpoint.
	S3PathStyle bool
	// URLObjectKeys lets Function URL and API Gateway requests name
	// control images by object key, fetched with the function's
	// credentials. Off by default, as for the edge server.
	URLObjectKeys bool
	// DeadlineMargin is kept back from the invocation deadline to reply
	// after a generation is stopped; at most a quarter of the time
	// remaining at the start of an invocation is kept back. The pipeline
	// stops between denoising steps, so the margin must cover the longest
	// step plus the reply (and, for events, writing the outputs).
	DeadlineMargin time.Duration
	// LogPrompts adds prompts to the HTTP request log lines (debugging).
	LogPrompts bool
}

// DefaultConfig returns the configuration of an empty environment.
func DefaultConfig() Config {
	return Config{
		InputPrefix:    DefaultInputPrefix,
		OutputPrefix:   DefaultOutputPrefix,
		DeadlineMargin: DefaultDeadlineMargin,
	}
}

// ConfigFromEnv reads the configuration from the CONTROLFN_* environment
// variables; unset ones take the DefaultConfig values.
func ConfigFromEnv() (Config, error) {
	return configFrom(os.LookupEnv)
}

func configFrom(lookup func(string) (string, bool)) (Config, error) {
	c := DefaultConfig()
	var errs []error
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok {
			*dst = strings.TrimSpace(v)
		}
	}
	boolean := func(name string, dst *bool) {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
				return
			}
			*dst = b
		}
	}
	str(EnvInputBucket, &c.InputBucket)
	str(EnvInputPrefix, &c.InputPrefix)
	str(EnvOutputBucket, &c.OutputBucket)
	str(EnvOutputPrefix, &c.OutputPrefix)
	str(EnvS3Endpoint, &c.S3Endpoint)
	c.S3PathStyle = c.S3Endpoint != ""
	boolean(EnvS3PathStyle, &c.S3PathStyle)
	boolean(EnvURLObjectKeys, &c.URLObjectKeys)
	boolean(EnvLogPrompts, &c.LogPrompts)
	if v, ok := lookup(EnvDeadlineMargin); ok && strings.TrimSpace(v) != "" {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a non-negative duration such as 2s", EnvDeadlineMargin, v))
		} else {
			c.DeadlineMargin = d
		}
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("lambda: configuration: %w", err)
	}
	return c, nil
}

// Validate refuses configurations under which S3 events would loop or
// never run.
func (c Config) Validate() error {
	if c.DeadlineMargin < 0 {
		return errors.New("negative deadline margin")
	}
	if c.OutputBucket != "" {
		// Inputs may live in another bucket: no overlap can be judged here.
		return nil
	}
	if strings.HasPrefix(c.InputPrefix, c.OutputPrefix) {
		return fmt.Errorf("with outputs written beside the inputs (%s unset), the input prefix %q must not start with the output prefix %q: every input would be taken for an output and ignored",
			EnvOutputBucket, c.InputPrefix, c.OutputPrefix)
	}
	return nil
}
