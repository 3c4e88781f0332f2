package artifacts

import (
	"archive/tar"
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Compression selects how Pack compresses the tar stream.
//
// On fp16 weights, zstd's match finding gains almost nothing (under 1%);
// what pays is entropy-coding the literals, whose high bytes (sign and
// exponent) are far from uniform: about 9-10%, at the fastest level's
// speed. The zstd levels below the "better" one skip that stage, so the
// default here is the fastest level with it turned on. The measurements
// are in TestCompressionRatios.
type Compression int

const (
	// CompressDefault is zstd's fastest matching with entropy-coded
	// literals: as small as CompressBest on fp16 weights, many times faster.
	CompressDefault Compression = iota
	// CompressNone writes a plain tar (`--no-compress`).
	CompressNone
	// CompressFastest is zstd's fastest level as is: about 1% on weights.
	CompressFastest
	CompressBetter
	CompressBest
)

func (c Compression) String() string {
	switch c {
	case CompressDefault:
		return "zstd-default"
	case CompressNone:
		return "none"
	case CompressFastest:
		return "zstd-fastest"
	case CompressBetter:
		return "zstd-better"
	case CompressBest:
		return "zstd-best"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

func (c Compression) encoderOptions() ([]zstd.EOption, error) {
	switch c {
	case CompressDefault:
		return []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithAllLitEntropyCompression(true)}, nil
	case CompressFastest:
		return []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest)}, nil
	case CompressBetter:
		return []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedBetterCompression)}, nil
	case CompressBest:
		return []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedBestCompression)}, nil
	}
	return nil, fmt.Errorf("unknown compression %v", c)
}

// PackOptions tunes Pack. The zero value packs the listed files with
// CompressDefault.
type PackOptions struct {
	Compression Compression
	// IncludeCache also packs cache/, for shipping executables compiled on
	// a machine identical to the target. Entries are checked again when
	// loaded, so a mismatched one costs a compile, not a failure.
	IncludeCache bool
}

// PackStats says what Pack wrote.
type PackStats struct {
	Compression Compression
	// Files counts the entries, the manifest included.
	Files int
	// TarBytes is the uncompressed tar stream; ArchiveBytes is what was
	// written to the output.
	TarBytes     int64
	ArchiveBytes int64
	Duration     time.Duration
}

// Ratio is the compression ratio, TarBytes / ArchiveBytes.
func (s PackStats) Ratio() float64 {
	if s.ArchiveBytes == 0 {
		return 0
	}
	return float64(s.TarBytes) / float64(s.ArchiveBytes)
}

func (s PackStats) String() string {
	saved := 0.0
	if s.TarBytes > 0 {
		saved = 100 * (1 - float64(s.ArchiveBytes)/float64(s.TarBytes))
	}
	return fmt.Sprintf("%d files, %s tar -> %s %s (ratio %.3f, %.1f%% saved) in %v",
		s.Files, formatBytes(s.TarBytes), formatBytes(s.ArchiveBytes), s.Compression,
		s.Ratio(), saved, s.Duration.Round(time.Millisecond))
}

// Pack writes the bundle at dir to w as a tar, zstd-compressed unless
// opts.Compression is CompressNone. The manifest is the first entry, so
// Unpack can check each later entry before writing it; the files follow
// in manifest order, each hashed on the way and checked against the
// manifest, so a corrupt bundle is never shipped. Headers carry no owner
// and the build time, so the same bundle packs to the same tar. On error,
// what was written to w is incomplete and must be discarded.
func Pack(dir string, w io.Writer, opts PackOptions) (PackStats, error) {
	start := time.Now()
	stats, err := pack(dir, w, opts)
	stats.Duration = time.Since(start)
	if err != nil {
		return stats, fmt.Errorf("pack bundle %s: %w", dir, err)
	}
	return stats, nil
}

func pack(dir string, w io.Writer, opts PackOptions) (PackStats, error) {
	stats := PackStats{Compression: opts.Compression}
	m, data, err := readManifest(dir)
	if err != nil {
		return stats, err
	}

	archive := &countingWriter{w: w}
	var zw *zstd.Encoder
	tarOut := io.Writer(archive)
	if opts.Compression != CompressNone {
		zopts, err := opts.Compression.encoderOptions()
		if err != nil {
			return stats, err
		}
		zw, err = zstd.NewWriter(archive, zopts...)
		if err != nil {
			return stats, err
		}
		// Close is idempotent; this one only frees the encoder on error.
		defer zw.Close()
		tarOut = zw
	}
	tarStream := &countingWriter{w: tarOut}
	tw := tar.NewWriter(tarStream)
	mtime := m.Created.UTC().Truncate(time.Second)

	if err := tw.WriteHeader(fileHeader(ManifestName, int64(len(data)), mtime)); err != nil {
		return stats, err
	}
	if _, err := tw.Write(data); err != nil {
		return stats, err
	}
	stats.Files++
	for _, f := range m.Files {
		if err := packFile(tw, dir, f.Path, &f, mtime); err != nil {
			return stats, err
		}
		stats.Files++
	}
	if opts.IncludeCache {
		n, err := packCache(tw, dir, mtime)
		stats.Files += n
		if err != nil {
			return stats, err
		}
	}
	if err := tw.Close(); err != nil {
		return stats, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return stats, err
		}
	}
	stats.TarBytes, stats.ArchiveBytes = tarStream.n, archive.n
	return stats, nil
}

func fileHeader(rel string, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: rel, Size: size, Mode: 0o644, ModTime: mtime}
}

// packFile copies one regular file into the tar. A listed file (want set)
// is checked against its manifest entry on the way.
func packFile(tw *tar.Writer, dir, rel string, want *File, mtime time.Time) error {
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return fmt.Errorf("%s: %w", rel, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", rel, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file (%s)", rel, ErrMismatch, st.Mode().Type())
	}
	if want != nil {
		if err := want.check(File{Path: rel, Size: st.Size(), SHA256: want.SHA256}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(fileHeader(rel, st.Size(), mtime)); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	hw := newHashWriter(tw)
	if _, err := copyBuffered(hw, io.LimitReader(f, st.Size())); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if want != nil {
		return want.check(hw.entry(rel))
	}
	return nil
}

// packCache adds the regular files under cache/, in WalkDir's lexical
// order; anything else there (a link to writable storage, say) is not
// shipped.
func packCache(tw *tar.Writer, dir string, mtime time.Time) (int, error) {
	root := filepath.Join(dir, cacheDirName)
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return filepath.SkipDir
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if err := packFile(tw, dir, filepath.ToSlash(rel), nil, mtime); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Defaults for UnpackOptions. A full SD1.5 bundle with one ControlNet is
// about 3 GiB in fp16; the defaults leave room for SDXL-sized ones.
const (
	DefaultMaxBytes = 64 << 30
	DefaultMaxFiles = 10000
	// maxDecoderWindow admits `zstd --long` archives (128 MiB windows)
	// while bounding what a hostile frame header can make us allocate.
	maxDecoderWindow = 128 << 20
)

// UnpackOptions tunes Unpack.
type UnpackOptions struct {
	// MaxBytes bounds the total size of the unpacked files, and MaxFiles
	// the number of archive entries; zero means DefaultMaxBytes and
	// DefaultMaxFiles. Both are checked against the manifest and each
	// entry's header before any of its bytes are written.
	MaxBytes int64
	MaxFiles int
	// Overwrite replaces an existing bundle at destDir, as Writer.Overwrite.
	Overwrite bool
	// NoSync skips fsync, for destinations that do not outlive the process
	// anyway, such as a serverless function's scratch disk, where the
	// syncs would only add to cold start.
	NoSync bool
}

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// Unpack reads an archive written by Pack (zstd-compressed or a plain tar;
// the format is detected) into destDir and returns the opened bundle.
//
// It accepts only what Pack writes: the manifest first, then regular files
// and directories with clean relative names; every file is listed in the
// manifest (or under cache/) with the size in its header and is hashed as
// it is written, so the result is verified as Open's VerifyFull would
// verify it, without reading it back. Links, devices and unlisted entries
// are refused, as are archives over opts' limits. The bundle is built in a
// hidden sibling of destDir and renamed into place only when complete, so
// a failed or interrupted Unpack leaves nothing at destDir.
func Unpack(r io.Reader, destDir string, opts UnpackOptions) (*Bundle, error) {
	final, err := filepath.Abs(destDir)
	if err != nil {
		return nil, fmt.Errorf("unpack to %s: %w", destDir, err)
	}
	if !opts.Overwrite {
		// Fail before the work, not after; replaceDir checks again.
		if _, err := os.Lstat(final); err == nil {
			return nil, fmt.Errorf("unpack to %s: %w; set Overwrite to replace it", destDir, fs.ErrExist)
		}
	}
	// The stream and its manifest are checked before anything is written,
	// so garbage costs no disk work.
	br := bufio.NewReaderSize(r, 64<<10)
	src := io.Reader(br)
	if magic, _ := br.Peek(len(zstdMagic)); bytes.Equal(magic, zstdMagic) {
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(maxDecoderWindow))
		if err != nil {
			return nil, fmt.Errorf("unpack to %s: %w", destDir, err)
		}
		defer zr.Close()
		src = zr
	}
	tr := tar.NewReader(src)
	m, data, err := readArchiveManifest(tr)
	if err != nil {
		return nil, fmt.Errorf("unpack to %s: %w", destDir, err)
	}
	tmp, err := tempSibling(final, "unpack")
	if err != nil {
		return nil, fmt.Errorf("unpack to %s: %w", destDir, err)
	}
	err = extract(tr, tmp, m, data, opts)
	if err == nil {
		err = replaceDir(tmp, final, opts.Overwrite)
	}
	if err != nil {
		_ = os.RemoveAll(tmp) // Best effort: it is hidden and has no manifest.
		return nil, fmt.Errorf("unpack to %s: %w", destDir, err)
	}
	return newBundle(destDir, m, Options{}), nil
}

// extract writes the entries after the manifest into tmp, checking each
// against m before writing it, and writes the manifest (data) last.
func extract(tr *tar.Reader, tmp string, m *Manifest, data []byte, opts UnpackOptions) error {
	maxBytes := cmp.Or(opts.MaxBytes, DefaultMaxBytes)
	maxFiles := cmp.Or(opts.MaxFiles, DefaultMaxFiles)
	want := make(map[string]File, len(m.Files))
	total := int64(len(data))
	for _, f := range m.Files {
		want[f.Path] = f
		total += f.Size
	}
	if len(m.Files)+1 > maxFiles {
		return fmt.Errorf("manifest lists %d files, over the limit of %d", len(m.Files)+1, maxFiles)
	}
	if total > maxBytes {
		return fmt.Errorf("manifest lists %d bytes, over the limit of %d", total, maxBytes)
	}

	seen := map[string]bool{ManifestName: true}
	for entries := 1; ; entries++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if entries >= maxFiles {
			return fmt.Errorf("archive has more than %d entries", maxFiles)
		}
		name, err := entryName(hdr)
		if err != nil {
			return err
		}
		abs := filepath.Join(tmp, filepath.FromSlash(name))
		if hdr.Typeflag == tar.TypeDir {
			if _, listed := want[name]; listed || !inBundleDir(name) {
				return fmt.Errorf("%s: %w: a directory in the archive", name, ErrMismatch)
			}
			if err := os.MkdirAll(abs, 0o755); err != nil {
				return fmt.Errorf("%s: %w", name, unwrapPath(err))
			}
			continue
		}
		if seen[name] {
			return fmt.Errorf("%s: %w: listed twice in the archive", name, ErrMismatch)
		}
		seen[name] = true
		f, listed := want[name]
		switch {
		case listed && hdr.Size != f.Size:
			return f.check(File{Path: name, Size: hdr.Size})
		case listed:
		case inCache(name):
			// A cache entry: it checks itself when loaded.
			if total += hdr.Size; total > maxBytes {
				return fmt.Errorf("%s: archive holds over %d bytes", name, maxBytes)
			}
		default:
			return fmt.Errorf("%s: %w", name, ErrUnexpectedFile)
		}
		got, err := writeEntry(abs, name, tr, hdr.Size, !opts.NoSync)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if listed {
			if err := f.check(got); err != nil {
				return err
			}
		}
	}
	var missing []error
	for _, f := range m.Files {
		if !seen[f.Path] {
			missing = append(missing, fmt.Errorf("%s: %w", f.Path, fs.ErrNotExist))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return fmt.Errorf("archive is incomplete: %w", err)
	}
	// Last, as the writer does: a directory without a manifest is never a
	// bundle, whatever else it holds.
	abs := filepath.Join(tmp, ManifestName)
	if _, err := writeEntry(abs, ManifestName, bytes.NewReader(data), int64(len(data)), !opts.NoSync); err != nil {
		return fmt.Errorf("%s: %w", ManifestName, err)
	}
	if !opts.NoSync {
		if err := syncDirs(tmp); err != nil {
			return err
		}
	}
	return nil
}

// readArchiveManifest reads and parses the first entry, which must be the
// manifest.
func readArchiveManifest(tr *tar.Reader) (*Manifest, []byte, error) {
	hdr, err := tr.Next()
	if err == io.EOF {
		return nil, nil, errors.New("archive is empty")
	}
	if err != nil {
		return nil, nil, err
	}
	if hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg {
		return nil, nil, fmt.Errorf("first entry is %q, want the %s that Pack writes first", hdr.Name, ManifestName)
	}
	if hdr.Size > MaxManifestSize {
		return nil, nil, fmt.Errorf("%s: %d bytes exceeds the %d byte limit", ManifestName, hdr.Size, MaxManifestSize)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, err
	}
	return m, data, nil
}

// entryName returns the bundle path of an archive entry, refusing every
// entry type but files and directories and every name that is not a clean
// path inside the bundle.
func entryName(hdr *tar.Header) (string, error) {
	name := hdr.Name
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		if len(name) > 1 && name[len(name)-1] == '/' {
			name = name[:len(name)-1]
		}
	default:
		return "", fmt.Errorf("%q: %w: entry type %q is not a regular file or directory", hdr.Name, ErrMismatch, hdr.Typeflag)
	}
	if err := checkPath(name); err != nil {
		return "", fmt.Errorf("%w: %v", ErrMismatch, err)
	}
	if hdr.Size < 0 || hdr.Size > maxFileSize {
		return "", fmt.Errorf("%s: size %d out of range", name, hdr.Size)
	}
	return name, nil
}

// writeEntry writes exactly size bytes from r to a new file, hashing them.
func writeEntry(abs, rel string, r io.Reader, size int64, sync bool) (File, error) {
	f, err := createFile(abs)
	if err != nil {
		return File{}, unwrapPath(err)
	}
	hw := newHashWriter(f)
	n, err := copyBuffered(hw, io.LimitReader(r, size))
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return hw.entry(rel), err
}

// inCache reports whether p is inside cache/.
func inCache(p string) bool { return strings.HasPrefix(p, cacheDirName+"/") }

// inBundleDir reports whether a directory may appear at p: anywhere but at
// or under the manifest's name.
func inBundleDir(p string) bool {
	top, _, _ := strings.Cut(p, "/")
	return top != ManifestName
}
