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

// Release tells the kernel the mapped pages of a tensor are no longer
// needed (MADV_DONTNEED): after a loader has copied a weight to the device
// its file pages would otherwise stay resident and count a second time in
// the process's memory. The mapping stays valid; a later read faults the
// pages back in from the file. Only whole pages inside the tensor are
// released, so neighbours are untouched.
func (f *File) Release(name string) {
	ti, ok := f.infos[name]
	if !ok || !f.mapped || f.data == nil {
		return
	}
	base := int64(len(f.whole) - len(f.data))
	page := int64(os.Getpagesize())
	start := (base + ti.Begin + page - 1) / page * page
	end := (base + ti.End) / page * page
	if end > start {
		_ = syscall.Madvise(f.whole[start:end], syscall.MADV_DONTNEED) // advice only
	}
}
