package artifacts

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
)

// VerifyMode says how much of a bundle Open checks against its manifest.
type VerifyMode int

const (
	// VerifyFull checks that no unlisted file exists and that every listed
	// file is a regular file with the listed size and sha256.
	VerifyFull VerifyMode = iota
	// VerifySizes checks everything VerifyFull does except the hashes: it
	// catches missing, extra and truncated files at the cost of a directory
	// walk, for measuring how much of cold start hashing takes.
	VerifySizes
	// VerifyNone only parses and validates the manifest. Callers that load
	// files in parallel can then call Bundle.VerifyFile for each file just
	// before they load it.
	VerifyNone
)

// Options tunes Open. The zero value verifies everything.
type Options struct {
	Verify VerifyMode
	// AllowExtraFiles accepts files the manifest does not list. By default
	// they are refused; see the package documentation for why.
	AllowExtraFiles bool
	// Parallelism bounds how many files are hashed at once; zero or less
	// means GOMAXPROCS.
	Parallelism int
}

// Bundle is an opened bundle directory.
type Bundle struct {
	Dir      string
	Manifest *Manifest

	opts  Options
	files map[string]File
}

// Open reads and validates dir's manifest and verifies the files as opts
// says. Every error names the file it is about, e.g.
// "weights/unet.safetensors: integrity mismatch: sha256 is ..., manifest
// says ...". When several files fail, all of them are reported.
func Open(dir string, opts Options) (*Bundle, error) {
	m, _, err := readManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("open bundle %s: %w", dir, err)
	}
	b := newBundle(dir, m, opts)
	if opts.Verify != VerifyNone {
		if err := b.verify(opts.Verify == VerifyFull); err != nil {
			return nil, fmt.Errorf("open bundle %s: %w", dir, err)
		}
	}
	return b, nil
}

func newBundle(dir string, m *Manifest, opts Options) *Bundle {
	files := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		files[f.Path] = f
	}
	return &Bundle{Dir: dir, Manifest: m, opts: opts, files: files}
}

// readManifest reads and parses dir's manifest; it also returns the bytes,
// which Pack ships as they are.
func readManifest(dir string) (*Manifest, []byte, error) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ManifestName, unwrapPath(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, err
	}
	return m, data, nil
}

// Verify checks the whole bundle as VerifyFull does, whatever Open was told.
func (b *Bundle) Verify() error {
	if err := b.verify(true); err != nil {
		return fmt.Errorf("verify bundle %s: %w", b.Dir, err)
	}
	return nil
}

// VerifyFile checks one listed file's type, size and sha256.
func (b *Bundle) VerifyFile(rel string) error {
	f, ok := b.files[rel]
	if !ok {
		return fmt.Errorf("verify bundle %s: %s: %w", b.Dir, rel, ErrUnexpectedFile)
	}
	if err := b.checkFile(f, true); err != nil {
		return fmt.Errorf("verify bundle %s: %w", b.Dir, err)
	}
	return nil
}

func (b *Bundle) verify(hash bool) error {
	if !b.opts.AllowExtraFiles {
		if err := checkExtraFiles(b.Dir, b.files); err != nil {
			return err
		}
	}
	files := b.Manifest.Files
	// Largest first, so one big file does not start last and run alone.
	order := make([]int, len(files))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(files[y].Size, files[x].Size) })
	workers := b.opts.Parallelism
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// Each worker writes only the slots of the files it took, and errs is
	// joined in manifest order, so the message is the same run to run.
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, len(files)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = b.checkFile(files[i], hash)
			}
		})
	}
	for _, i := range order {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// checkFile checks that a listed file is a regular file of the listed size
// and, if hash is set, sha256.
func (b *Bundle) checkFile(want File, hash bool) error {
	abs := b.Path(want.Path)
	st, err := os.Lstat(abs)
	if err != nil {
		return fmt.Errorf("%s: %w", want.Path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file (%s)", want.Path, ErrMismatch, st.Mode().Type())
	}
	if !hash {
		return want.check(File{Path: want.Path, Size: st.Size(), SHA256: want.SHA256})
	}
	f, err := os.Open(abs)
	if err != nil {
		return fmt.Errorf("%s: %w", want.Path, unwrapPath(err))
	}
	defer f.Close()
	got, err := hashFile(f, want.Path)
	if err != nil {
		return err
	}
	return want.check(got)
}

// unwrapPath drops the absolute path an *fs.PathError carries, since our
// messages already name the file by its bundle path.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}

// Path returns the absolute (or dir-relative) filesystem path of a bundle
// path.
func (b *Bundle) Path(rel string) string {
	return filepath.Join(b.Dir, filepath.FromSlash(rel))
}

// Component returns the named component.
func (b *Bundle) Component(name string) (*Component, error) {
	for i := range b.Manifest.Components {
		if c := &b.Manifest.Components[i]; c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("bundle %s: no component %q", b.Dir, name)
}

// Summary describes the bundle for `controlfn inspect`: its directory,
// then Manifest.Summary.
func (b *Bundle) Summary() string { return b.Manifest.summary(b.Dir) }
