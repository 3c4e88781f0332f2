package artifacts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

var (
	// ErrMismatch reports a file whose size or sha256 differs from its
	// manifest entry, or that is not a regular file.
	ErrMismatch = errors.New("integrity mismatch")
	// ErrUnexpectedFile reports a file in a bundle that its manifest does
	// not list.
	ErrUnexpectedFile = errors.New("not listed in the manifest")
)

const (
	cacheDirName = "cache"
	// copyBufferSize keeps read and write syscalls few on multi-GB weight
	// files without holding more than this much of them in memory.
	copyBufferSize = 1 << 20
)

// hashWriter hashes and counts what is written through it, so a file's
// entry is known the moment it has been written, without reading it back.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newHashWriter(w io.Writer) *hashWriter { return &hashWriter{w: w, h: sha256.New()} }

func (hw *hashWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

func (hw *hashWriter) entry(rel string) File {
	return File{Path: rel, Size: hw.n, SHA256: hex.EncodeToString(hw.h.Sum(nil))}
}

// copyBuffered copies with our buffer size; the anonymous struct hides
// *os.File's WriterTo, which would fall back to a 32 KiB buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(dst, struct{ io.Reader }{src}, make([]byte, copyBufferSize))
}

// hashFile streams an open file through sha256 and returns its entry.
func hashFile(f *os.File, rel string) (File, error) {
	hw := newHashWriter(io.Discard)
	if _, err := copyBuffered(hw, f); err != nil {
		return File{}, fmt.Errorf("%s: %w", rel, err)
	}
	return hw.entry(rel), nil
}

// check compares what was found with the manifest's entry; the error names
// the file and both values.
func (want File) check(got File) error {
	if got.Size != want.Size {
		return fmt.Errorf("%s: %w: size is %d bytes, manifest says %d", want.Path, ErrMismatch, got.Size, want.Size)
	}
	if got.SHA256 != want.SHA256 {
		return fmt.Errorf("%s: %w: sha256 is %s, manifest says %s", want.Path, ErrMismatch, got.SHA256, want.SHA256)
	}
	return nil
}

// checkExtraFiles walks a bundle directory and reports the first file that
// is not the manifest, not under cache/ and not in listed. The cache may be
// anything, a symbolic link to writable storage included.
func checkExtraFiles(root string, listed map[string]File) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == cacheDirName && d.IsDir():
			return filepath.SkipDir
		case rel == "." || rel == cacheDirName || rel == ManifestName || d.IsDir():
			return nil
		}
		if _, ok := listed[rel]; !ok {
			return fmt.Errorf("%s: %w", rel, ErrUnexpectedFile)
		}
		return nil
	})
}

// createFile creates a new file and its parent directories.
func createFile(abs string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDirs fsyncs every directory under root, so that the entries of files
// already fsynced survive a power loss along with their data.
func syncDirs(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return syncDir(p)
	})
}

// tempSibling creates an empty hidden directory beside final. Its name
// starts with a dot and carries the purpose, so nothing mistakes it for
// the bundle and a person can tell what a leftover one was.
func tempSibling(final, purpose string) (string, error) {
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(parent, "."+filepath.Base(final)+"."+purpose+"-*")
	if err != nil {
		return "", err
	}
	// MkdirTemp makes 0700; a bundle is read by whatever user the function
	// runs as (Lambda's sandbox user is not the image's root), so it gets
	// an ordinary readable mode.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", err
	}
	return dir, nil
}

// replaceDir moves the complete directory tmp to final.
//
// Without overwrite it refuses an existing final. The check and the rename
// are two steps, so a bundle appearing between them can still be replaced
// if it is an empty directory (rename(2) replaces only empty ones); the
// standard library has no portable no-replace rename.
//
// With overwrite, final must be a bundle (holding a manifest) or empty, so
// a mistyped path cannot wipe an unrelated directory. The old bundle is
// renamed to a hidden ".<name>.old-*" sibling, tmp is renamed in, and the
// old one is removed. A crash between the two renames leaves no final at
// all, never a mix: a reader fails with "not found", and the previous
// bundle is intact in the .old sibling. A crash after them leaves only a
// stale .old sibling to delete.
func replaceDir(tmp, final string, overwrite bool) error {
	parent := filepath.Dir(final)
	_, err := os.Lstat(final)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
		return syncDir(parent)
	case err != nil:
		return err
	case !overwrite:
		return fmt.Errorf("%w; set Overwrite to replace it", fs.ErrExist)
	}
	if err := checkReplaceable(final); err != nil {
		return err
	}
	old := filepath.Join(parent, "."+filepath.Base(final)+".old-"+randomSuffix())
	if err := os.Rename(final, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		if rerr := os.Rename(old, final); rerr != nil {
			return fmt.Errorf("%w; restoring the previous bundle from %s also failed: %v", err, old, rerr)
		}
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	// The new bundle is in place and durable; a failure to delete the old
	// copy leaves a hidden sibling that nothing reads, not a broken bundle.
	_ = os.RemoveAll(old)
	return nil
}

func checkReplaceable(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return errors.New("exists and is not a directory; refusing to replace it")
	}
	if _, err := os.Lstat(filepath.Join(dir, ManifestName)); err == nil {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("exists, is not a bundle (no %s) and is not empty; refusing to replace it", ManifestName)
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error.
	return hex.EncodeToString(b[:])
}
