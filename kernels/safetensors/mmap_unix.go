//go:build unix

package safetensors

import (
	"os"
	"syscall"
)

func mapFile(fh *os.File, size int64) ([]byte, bool, error) {
	if size != int64(int(size)) {
		return nil, false, syscall.EFBIG
	}
	b, err := syscall.Mmap(int(fh.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

func unmap(b []byte) error { return syscall.Munmap(b) }
