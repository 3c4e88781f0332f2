package artifacts

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// A Writer builds a bundle in a hidden temporary directory beside its final
// place and moves it there on Commit. Until Commit returns, nothing exists
// at the final path; if the compiler fails or is killed, what remains is a
// ".<name>.tmp-*" sibling without a manifest, which no reader accepts.
//
// Each Add method records the file's size and sha256 as it is written. The
// Add methods may be called from several goroutines at once.
type Writer struct {
	// Overwrite lets Commit replace an existing bundle at the final path;
	// see Commit for what a crash during the replacement leaves behind.
	Overwrite bool

	final string
	tmp   string

	mu sync.Mutex
	// files holds the written files; a nil entry is one being written.
	files map[string]*File
	done  bool // committed or aborted
}

// NewWriter starts a bundle that Commit will place at finalDir.
func NewWriter(finalDir string) (*Writer, error) {
	final, err := filepath.Abs(finalDir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", finalDir, err)
	}
	tmp, err := tempSibling(final, "tmp")
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", finalDir, err)
	}
	return &Writer{final: final, tmp: tmp, files: make(map[string]*File)}, nil
}

// Dir is the temporary directory files are written into until Commit.
// The compiler reads back what it wrote from there (to trace programs on the
// very files the function will load); the path is gone after Commit or
// Abort.
func (w *Writer) Dir() string { return w.tmp }

// AddBytes writes data to the bundle path rel.
func (w *Writer) AddBytes(rel string, data []byte) (File, error) {
	return w.AddStream(rel, func(dst io.Writer) error {
		_, err := dst.Write(data)
		return err
	})
}

// AddReader copies r to the bundle path rel.
func (w *Writer) AddReader(rel string, r io.Reader) (File, error) {
	return w.AddStream(rel, func(dst io.Writer) error {
		_, err := io.Copy(dst, r)
		return err
	})
}

// AddStream creates the bundle path rel and calls write to fill it,
// hashing the bytes on their way to disk. If write fails, the partial file
// is removed and not recorded.
func (w *Writer) AddStream(rel string, write func(io.Writer) error) (File, error) {
	return w.add(rel, func(abs string) (File, error) {
		f, err := createFile(abs)
		if err != nil {
			return File{}, err
		}
		bw := bufio.NewWriterSize(f, copyBufferSize)
		hw := newHashWriter(bw)
		err = write(hw)
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return hw.entry(rel), err
	})
}

// AddFile calls write with the absolute path that rel will have in the
// bundle, for producers that insist on writing a file by name. The file is
// then hashed by streaming it once. If write fails, the file is removed and
// not recorded. Any other file write leaves in the bundle makes Commit fail.
func (w *Writer) AddFile(rel string, write func(path string) error) (File, error) {
	return w.add(rel, func(abs string) (File, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return File{}, err
		}
		if err := write(abs); err != nil {
			return File{}, err
		}
		st, err := os.Lstat(abs)
		if err != nil {
			return File{}, err
		}
		if !st.Mode().IsRegular() {
			return File{}, fmt.Errorf("%w: not a regular file (%s)", ErrMismatch, st.Mode().Type())
		}
		f, err := os.Open(abs)
		if err != nil {
			return File{}, err
		}
		defer f.Close()
		entry, err := hashFile(f, rel)
		if err != nil {
			return File{}, err
		}
		// fsync works on a read-only descriptor and covers whatever write
		// left in the page cache.
		return entry, f.Sync()
	})
}

// add reserves rel, runs write and records the result, or removes what
// write left and frees rel.
func (w *Writer) add(rel string, write func(abs string) (File, error)) (File, error) {
	if err := checkPath(rel); err != nil {
		return File{}, fmt.Errorf("bundle %s: %w", w.final, err)
	}
	if isReserved(rel) {
		return File{}, fmt.Errorf("bundle %s: %s is reserved", w.final, rel)
	}
	w.mu.Lock()
	switch {
	case w.done:
		w.mu.Unlock()
		return File{}, fmt.Errorf("bundle %s: %s: writer already committed or aborted", w.final, rel)
	case hasKey(w.files, rel):
		w.mu.Unlock()
		return File{}, fmt.Errorf("bundle %s: %s added twice", w.final, rel)
	}
	w.files[rel] = nil
	w.mu.Unlock()

	abs := filepath.Join(w.tmp, filepath.FromSlash(rel))
	entry, err := write(abs)

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		delete(w.files, rel)
		_ = os.Remove(abs) // What write left is useless; it may not exist.
		return File{}, fmt.Errorf("bundle %s: %s: %w", w.final, rel, err)
	}
	w.files[rel] = &entry
	return entry, nil
}

func hasKey(m map[string]*File, k string) bool {
	_, ok := m[k]
	return ok
}

// Commit completes m, writes it as the manifest and moves the bundle to its
// final path. It sets m.Files to the files written, and fills a zero
// FormatVersion, BuildID or Created, and an empty Component.SHA256, from
// what it knows. If m fails validation, or the temporary directory holds a
// file no Add method wrote, Commit returns the error and the Writer stays
// usable, so the caller can fix m and retry or Abort.
//
// The manifest is written last, after every file is fsynced, and the
// directory is renamed into place in one step. An existing final path is
// refused unless w.Overwrite is set; replacing one takes two renames, and
// a crash between them leaves no bundle at the final path (the previous
// one survives in a hidden ".<name>.old-*" sibling), never a mix of both.
func (w *Writer) Commit(m *Manifest) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("bundle %s: writer already committed or aborted", w.final)
	}
	m.Files = m.Files[:0]
	for rel, f := range w.files {
		if f == nil {
			return fmt.Errorf("bundle %s: commit while %s is still being written", w.final, rel)
		}
		m.Files = append(m.Files, *f)
	}
	slices.SortFunc(m.Files, func(a, b File) int { return cmp.Compare(a.Path, b.Path) })
	if err := w.complete(m); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	listed := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		listed[f.Path] = f
	}
	if err := checkExtraFiles(w.tmp, listed); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	data, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("bundle %s: %s: %w", w.final, ManifestName, err)
	}
	if err := writeFileSync(filepath.Join(w.tmp, ManifestName), data); err != nil {
		return fmt.Errorf("bundle %s: %s: %w", w.final, ManifestName, err)
	}
	if err := syncDirs(w.tmp); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	if err := replaceDir(w.tmp, w.final, w.Overwrite); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	w.done = true
	return nil
}

// complete fills the manifest fields the writer can derive.
func (w *Writer) complete(m *Manifest) error {
	if m.FormatVersion == (Version{}) {
		m.FormatVersion = CurrentVersion()
	}
	if m.BuildID == uuid.Nil {
		id, err := uuid.NewRandom()
		if err != nil {
			return fmt.Errorf("build id: %w", err)
		}
		m.BuildID = id
	}
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Truncate(time.Second)
	}
	for i := range m.Components {
		c := &m.Components[i]
		if f := w.files[c.Weights]; c.SHA256 == "" && f != nil {
			c.SHA256 = f.SHA256
		}
	}
	for i := range m.Programs {
		p := &m.Programs[i]
		if f := w.files[p.File]; p.SHA256 == "" && f != nil {
			p.SHA256 = f.SHA256
		}
	}
	return nil
}

// Abort removes the temporary directory. It is a no-op after Commit, so
// `defer w.Abort()` is the way to clean up after any failure.
func (w *Writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	if err := os.RemoveAll(w.tmp); err != nil {
		return fmt.Errorf("bundle %s: %w", w.final, err)
	}
	return nil
}

// writeFileSync writes data to a path, truncating it, and fsyncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
