//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// Without mmap the file is read whole; correctness over zero-copy.
func mapFile(fh *os.File, size int64) ([]byte, bool, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(fh, b); err != nil {
		return nil, false, err
	}
	return b, false, nil
}

func unmap([]byte) error { return nil }

// Release is a no-op where files are read, not mapped.
func (f *File) Release(name string) {}
