package artifacts

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

var (
	// ErrCacheMiss is wrapped by every LoadExecutable error.
	ErrCacheMiss = errors.New("executable cache miss")

	cacheMagic = []byte("CFNEXEC1")
)

const (
	cacheHeaderSize = 8 + 64 + 8 + 32
	cacheExt        = ".exec"
	// maxCacheNameLen bounds each part of a cache directory name; device
	// descriptions can be long, and the key covers them in full.
	maxCacheNameLen = 64
)

// CacheKey identifies an executable: the program it was compiled from and
// the backend and device it was compiled for. It is lower-case hex. The
// parts are length-prefixed, so no two different triples can collide by
// shifting characters between parts.
func CacheKey(programHash, backend, device string) string {
	h := sha256.New()
	fmt.Fprintf(h, "controlfn executable v1\n%d:%s\n%d:%s\n%d:%s\n",
		len(programHash), programHash, len(backend), backend, len(device), device)
	return hex.EncodeToString(h.Sum(nil))
}

// CacheDir is the directory of a backend's and device's entries in a
// bundle: cache/<backend>-<device>, with anything but letters, digits, '.'
// and '_' in either replaced by '_'. A read-only bundle (a container image)
// can have cache/ be a symbolic link to writable storage.
func CacheDir(bundleDir, backend, device string) string {
	return filepath.Join(bundleDir, cacheDirName, sanitize(backend)+"-"+sanitize(device))
}

func sanitize(s string) string {
	if s == "" {
		return "unknown"
	}
	s = strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' {
			return r
		}
		return '_'
	}, s)
	return s[:min(len(s), maxCacheNameLen)]
}

// StoreExecutable writes an entry for key into dir, creating dir. The
// entry appears atomically (written to a temporary file, fsynced, renamed),
// so a concurrent or later LoadExecutable sees either all of it or none.
// A failure to store only costs a future compile; callers should log it
// and carry on.
func StoreExecutable(dir, key string, data []byte) error {
	if err := checkSHA256(key); err != nil {
		return fmt.Errorf("store executable: key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("store executable %s: %w", key, err)
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("store executable %s: %w", key, err)
	}
	sum := sha256.Sum256(data)
	header := make([]byte, 0, cacheHeaderSize)
	header = append(header, cacheMagic...)
	header = append(header, key...)
	header = binary.LittleEndian.AppendUint64(header, uint64(len(data)))
	header = append(header, sum[:]...)
	_, err = f.Write(header)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, key+cacheExt))
	}
	if err != nil {
		_ = os.Remove(f.Name()) // Gone already after a successful rename.
		return fmt.Errorf("store executable %s: %w", key, err)
	}
	return nil
}

// LoadExecutable returns the payload stored for key in dir. Every failure
// (no entry, an unreadable, truncated or corrupt one, one whose header
// names another key) is an error wrapping ErrCacheMiss that says why, for
// the log; callers treat all of them as a miss and compile, so the cache
// can never break a cold start.
func LoadExecutable(dir, key string) ([]byte, error) {
	data, err := loadExecutable(dir, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCacheMiss, key, err)
	}
	return data, nil
}

func loadExecutable(dir, key string) ([]byte, error) {
	if err := checkSHA256(key); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, key+cacheExt))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	header := make([]byte, cacheHeaderSize)
	if _, err := io.ReadFull(f, header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	magic, rest := header[:8], header[8:]
	storedKey, rest := rest[:64], rest[64:]
	size, sum := binary.LittleEndian.Uint64(rest[:8]), rest[8:]
	switch {
	case !bytes.Equal(magic, cacheMagic):
		return nil, errors.New("not a cache entry (bad magic)")
	case string(storedKey) != key:
		return nil, fmt.Errorf("entry was stored for key %q", storedKey)
	case size != uint64(st.Size()-cacheHeaderSize):
		// Checked before allocating, so a corrupt size cannot ask for
		// more memory than the file holds.
		return nil, fmt.Errorf("header says %d payload bytes, file holds %d", size, st.Size()-cacheHeaderSize)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("payload sha256 is %x, header says %x", got, sum)
	}
	return data, nil
}
