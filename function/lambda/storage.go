package lambda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Errors of ObjectStore.Get.
var (
	ErrNotFound = errors.New("object not found")
	ErrTooLarge = errors.New("object too large")
)

// Object is an object's content and what the handler needs of its
// attributes.
type Object struct {
	Data        []byte
	ContentType string
	// Metadata is the user metadata (x-amz-meta-*), keyed by the lower
	// case name without the prefix.
	Metadata map[string]string
}

// ObjectStore is the object storage the event sources read control images
// from and write outputs to.
type ObjectStore interface {
	// Get reads an object of at most limit bytes. A missing object is an
	// error wrapping ErrNotFound; a larger one wraps ErrTooLarge.
	Get(ctx context.Context, bucket, key string, limit int64) (*Object, error)
	// Put writes an object, replacing any of the same key.
	Put(ctx context.Context, bucket, key string, obj Object) error
}

// S3Options configure NewS3Store.
type S3Options struct {
	// Endpoint overrides the endpoint URL (an S3-compatible server).
	Endpoint string
	// PathStyle addresses buckets as the first path segment.
	PathStyle bool
}

// S3Store is an ObjectStore over the AWS SDK's S3 client.
type S3Store struct {
	client *s3.Client
}

// NewS3Store creates an S3 client from the default AWS configuration of
// the environment (credentials, region; the Lambda runtime sets both).
func NewS3Store(ctx context.Context, opts S3Options) (*S3Store, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("lambda: loading the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		// S3-compatible servers ignore the region but the signer needs one.
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
			// Checksums beyond what S3 requires are not implemented by
			// every S3-compatible server.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
		o.UsePathStyle = opts.PathStyle
	})
	return &S3Store{client: client}, nil
}

// Get implements ObjectStore.
func (s *S3Store) Get(ctx context.Context, bucket, key string, limit int64) (*Object, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, ErrNotFound)
		}
		return nil, fmt.Errorf("s3://%s/%s: get: %w", bucket, key, err)
	}
	defer out.Body.Close()
	if n := aws.ToInt64(out.ContentLength); n > limit {
		return nil, fmt.Errorf("s3://%s/%s: %d bytes, over the limit of %d: %w", bucket, key, n, limit, ErrTooLarge)
	}
	var buf bytes.Buffer
	if n := aws.ToInt64(out.ContentLength); n > 0 {
		buf.Grow(int(n))
	}
	if _, err := buf.ReadFrom(io.LimitReader(out.Body, limit+1)); err != nil {
		return nil, fmt.Errorf("s3://%s/%s: reading: %w", bucket, key, err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("s3://%s/%s: over the limit of %d bytes: %w", bucket, key, limit, ErrTooLarge)
	}
	meta := make(map[string]string, len(out.Metadata))
	for k, v := range out.Metadata {
		meta[strings.ToLower(k)] = v
	}
	return &Object{Data: buf.Bytes(), ContentType: aws.ToString(out.ContentType), Metadata: meta}, nil
}

// Put implements ObjectStore.
func (s *S3Store) Put(ctx context.Context, bucket, key string, obj Object) error {
	in := &s3.PutObjectInput{
		Bucket:        aws.String(bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(obj.Data),
		ContentLength: aws.Int64(int64(len(obj.Data))),
		Metadata:      obj.Metadata,
	}
	if obj.ContentType != "" {
		in.ContentType = aws.String(obj.ContentType)
	}
	if _, err := s.client.PutObject(ctx, in); err != nil {
		return fmt.Errorf("s3://%s/%s: put: %w", bucket, key, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchBucket":
			return true
		}
	}
	return false
}
