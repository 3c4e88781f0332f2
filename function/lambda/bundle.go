package lambda

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/controlfn/controlfn/artifacts"
)

// MaxBundleBytes bounds a bundle fetched at init: Lambda's ephemeral
// storage tops out at 10 GiB.
const MaxBundleBytes = 10 << 30

// FetchBundle downloads a packed bundle (controlfn pack: .tar.zst or .tar)
// from an s3://bucket/key URI and unpacks it, verified, into dest, streaming
// (the archive is never held in memory). A bundle already unpacked at dest
// by an earlier init of the same sandbox is reused when it verifies.
func (s *S3Store) FetchBundle(ctx context.Context, uri, dest string) (*artifacts.Bundle, error) {
	bucket, key, ok := strings.Cut(strings.TrimPrefix(uri, "s3://"), "/")
	if !strings.HasPrefix(uri, "s3://") || !ok || bucket == "" || key == "" {
		return nil, fmt.Errorf("bundle %q: want s3://bucket/key", uri)
	}
	if b, err := artifacts.Open(dest, artifacts.Options{Verify: artifacts.VerifySizes}); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", uri, err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("bundle %s: get: %w", uri, err)
	}
	defer out.Body.Close()
	b, err := artifacts.Unpack(out.Body, dest, artifacts.UnpackOptions{MaxBytes: MaxBundleBytes, Overwrite: true})
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", uri, err)
	}
	return b, nil
}
