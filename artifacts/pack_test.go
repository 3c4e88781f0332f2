package artifacts

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func packBytes(t testing.TB, dir string, opts PackOptions) ([]byte, PackStats) {
	t.Helper()
	var buf bytes.Buffer
	stats, err := Pack(dir, &buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	if stats.ArchiveBytes != int64(buf.Len()) {
		t.Errorf("stats say %d archive bytes, wrote %d", stats.ArchiveBytes, buf.Len())
	}
	return buf.Bytes(), stats
}

func TestPackUnpackRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	m := writeSample(t, src)
	for _, c := range []Compression{CompressDefault, CompressNone, CompressFastest, CompressBetter, CompressBest} {
		t.Run(c.String(), func(t *testing.T) {
			archive, stats := packBytes(t, src, PackOptions{Compression: c})
			t.Logf("%v", stats)
			if stats.Files != len(m.Files)+1 {
				t.Errorf("packed %d files, want %d", stats.Files, len(m.Files)+1)
			}
			isZstd := bytes.HasPrefix(archive, zstdMagic)
			if isZstd != (c != CompressNone) {
				t.Errorf("zstd magic present = %v", isZstd)
			}
			dest := filepath.Join(t.TempDir(), "dest")
			b, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if b.Dir != dest || b.Manifest.BuildID != m.BuildID {
				t.Errorf("Unpack returned %s build %s", b.Dir, b.Manifest.BuildID)
			}
			if _, err := Open(dest, Options{}); err != nil {
				t.Fatalf("Open after Unpack: %v", err)
			}
			for rel, want := range sampleFiles() {
				got, err := os.ReadFile(b.Path(rel))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes, %v", rel, len(got), err)
				}
			}
			if got := siblings(t, dest); len(got) != 0 {
				t.Errorf("left beside the bundle: %v", got)
			}
		})
	}
}

func TestPackDeterministic(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeSample(t, src)
	a, _ := packBytes(t, src, PackOptions{Compression: CompressNone})
	b, _ := packBytes(t, src, PackOptions{Compression: CompressNone})
	if !bytes.Equal(a, b) {
		t.Error("packing the same bundle twice gave different tars")
	}
}

func TestPackRefusesCorruptBundle(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeSample(t, src)
	flipByte(t, filepath.Join(src, "weights/vae.safetensors"), 7)
	_, err := Pack(src, io.Discard, PackOptions{})
	mustContain(t, err, "weights/vae.safetensors: integrity mismatch: sha256")
	os.Truncate(filepath.Join(src, "weights/vae.safetensors"), 7)
	_, err = Pack(src, io.Discard, PackOptions{})
	mustContain(t, err, "weights/vae.safetensors: integrity mismatch: size is 7")
}

func TestPackIncludeCache(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeSample(t, src)
	if _, err := Pack(src, io.Discard, PackOptions{IncludeCache: true}); err != nil {
		t.Fatalf("IncludeCache without a cache: %v", err)
	}
	key := CacheKey("00112233445566778899aabbccddeeff", "xla", "cuda:0")
	if err := StoreExecutable(CacheDir(src, "xla", "cuda:0"), key, []byte("executable")); err != nil {
		t.Fatal(err)
	}
	for _, include := range []bool{false, true} {
		archive, _ := packBytes(t, src, PackOptions{IncludeCache: include})
		dest := filepath.Join(t.TempDir(), "dest")
		if _, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{NoSync: true}); err != nil {
			t.Fatal(err)
		}
		data, err := LoadExecutable(CacheDir(dest, "xla", "cuda:0"), key)
		if include && string(data) != "executable" {
			t.Errorf("IncludeCache: cache entry lost: %v", err)
		}
		if !include && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cache shipped without IncludeCache: %q, %v", data, err)
		}
	}
}

func TestUnpackExisting(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	writeSample(t, src)
	archive, _ := packBytes(t, src, PackOptions{Compression: CompressFastest})
	dest := filepath.Join(t.TempDir(), "dest")
	if _, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{})
	mustContain(t, err, "already exists")
	if _, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{Overwrite: true}); err != nil {
		t.Fatalf("Overwrite: %v", err)
	}
	if got := siblings(t, dest); len(got) != 0 {
		t.Errorf("left beside the bundle: %v", got)
	}
}

// entry is one tar entry of a hand-made archive.
type entry struct {
	hdr  tar.Header
	body []byte
}

// sampleEntries returns the entries Pack writes for the sample bundle, for
// tests to tamper with.
func sampleEntries(t testing.TB) []entry {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	writeSample(t, src)
	archive, _ := packBytes(t, src, PackOptions{Compression: CompressNone})
	var entries []entry
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		entries = append(entries, entry{*hdr, body})
	}
}

func makeTar(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		hdr.Size = int64(len(e.body))
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdCompress(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

func TestUnpackHostile(t *testing.T) {
	base := sampleEntries(t)
	index := func(name string) int {
		for i, e := range base {
			if e.hdr.Name == name {
				return i
			}
		}
		t.Fatalf("no entry %s", name)
		return -1
	}
	vae := index("weights/vae.safetensors")
	// with returns the sample entries with some changed.
	with := func(edit func(es []entry) []entry) []byte {
		es := make([]entry, len(base))
		copy(es, base)
		return makeTar(t, edit(es))
	}
	add := func(e entry) []byte { return with(func(es []entry) []entry { return append(es, e) }) }
	file := func(name string, body string) entry {
		return entry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, []byte(body)}
	}
	valid := with(func(es []entry) []entry { return es })

	for _, tc := range []struct {
		name    string
		archive []byte
		opts    UnpackOptions
		want    string
	}{
		{"traversal", add(file("../evil", "x")), UnpackOptions{}, "leaves the bundle"},
		{"deep traversal", add(file("weights/../../evil", "x")), UnpackOptions{}, "not clean"},
		{"absolute", add(file("/tmp/evil", "x")), UnpackOptions{}, "absolute"},
		{"dot prefix", add(file("./weights/x", "x")), UnpackOptions{}, "not clean"},
		{"symlink", add(entry{tar.Header{Typeflag: tar.TypeSymlink, Name: "weights/link", Linkname: "/etc/passwd"}, nil}), UnpackOptions{}, "entry type '2'"},
		{"symlink replacing a file", with(func(es []entry) []entry {
			es[vae] = entry{tar.Header{Typeflag: tar.TypeSymlink, Name: "weights/vae.safetensors", Linkname: "../../x"}, nil}
			return es
		}), UnpackOptions{}, "entry type '2'"},
		{"hardlink", add(entry{tar.Header{Typeflag: tar.TypeLink, Name: "cache/x", Linkname: "weights/vae.safetensors"}, nil}), UnpackOptions{}, "entry type '1'"},
		{"char device", add(entry{tar.Header{Typeflag: tar.TypeChar, Name: "cache/null", Devmajor: 1, Devminor: 3}, nil}), UnpackOptions{}, "entry type '3'"},
		{"fifo", add(entry{tar.Header{Typeflag: tar.TypeFifo, Name: "cache/fifo"}, nil}), UnpackOptions{}, "entry type '6'"},
		{"unlisted file", add(file("weights/extra.safetensors", "x")), UnpackOptions{}, "weights/extra.safetensors: not listed in the manifest"},
		{"second manifest", add(file(ManifestName, "{}")), UnpackOptions{}, "manifest.json: integrity mismatch: listed twice"},
		{"duplicate file", add(base[vae]), UnpackOptions{}, "weights/vae.safetensors: integrity mismatch: listed twice"},
		{"size differs from manifest", with(func(es []entry) []entry {
			es[vae].body = es[vae].body[:100]
			return es
		}), UnpackOptions{}, "weights/vae.safetensors: integrity mismatch: size is 100 bytes, manifest says 16384"},
		{"content differs from manifest", with(func(es []entry) []entry {
			es[vae].body = bytes.Clone(es[vae].body)
			es[vae].body[9] ^= 1
			return es
		}), UnpackOptions{}, "weights/vae.safetensors: integrity mismatch: sha256 is"},
		{"missing file", with(func(es []entry) []entry { return append(es[:vae], es[vae+1:]...) }), UnpackOptions{}, "archive is incomplete: weights/vae.safetensors"},
		{"manifest not first", with(func(es []entry) []entry {
			es[0], es[1] = es[1], es[0]
			return es
		}), UnpackOptions{}, "want the manifest.json that Pack writes first"},
		{"manifest is a dir", makeTar(t, []entry{{tar.Header{Typeflag: tar.TypeDir, Name: "manifest.json/"}, nil}}), UnpackOptions{}, "want the manifest.json"},
		{"invalid manifest", makeTar(t, []entry{file(ManifestName, `{"format_version": "1.0"}`)}), UnpackOptions{}, "manifest.json: invalid manifest"},
		{"future manifest", makeTar(t, []entry{file(ManifestName, `{"format_version": "3.1"}`)}), UnpackOptions{}, "unsupported bundle format version"},
		{"empty", makeTar(t, nil), UnpackOptions{}, "archive is empty"},
		{"not an archive", []byte("hello, world"), UnpackOptions{}, "unexpected EOF"},
		{"dir over a listed file", add(entry{tar.Header{Typeflag: tar.TypeDir, Name: "weights/unet.safetensors/"}, nil}), UnpackOptions{}, "a directory in the archive"},
		{"dir under the manifest name", add(entry{tar.Header{Typeflag: tar.TypeDir, Name: "manifest.json/x/"}, nil}), UnpackOptions{}, "a directory in the archive"},
		{"over the byte limit", valid, UnpackOptions{MaxBytes: 50000}, "over the limit of 50000"},
		{"over the file limit", valid, UnpackOptions{MaxFiles: 5}, "over the limit of 5"},
		{"cache bomb", add(file("cache/go-cpu/big.exec", strings.Repeat("x", 64<<10))), UnpackOptions{MaxBytes: 128 << 10}, "archive holds over 131072 bytes"},
		{"too many entries", with(func(es []entry) []entry {
			for i := range 20 {
				es = append(es, entry{tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("tokenizer/d%d/", i)}, nil})
			}
			return es
		}), UnpackOptions{MaxFiles: 20}, "more than 20 entries"},
		{"truncated", valid[:len(valid)/2], UnpackOptions{}, "unexpected EOF"},
		{"truncated zstd", zstdCompress(t, valid)[:2000], UnpackOptions{}, "unexpected EOF"},
		{"corrupt zstd", func() []byte {
			z := zstdCompress(t, valid)
			z[len(z)/2] ^= 0xff
			return z
		}(), UnpackOptions{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			_, err := Unpack(bytes.NewReader(tc.archive), dest, tc.opts)
			mustContain(t, err, "unpack to "+dest, tc.want)
			if _, err := os.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("something exists at the destination: %v", err)
			}
			if got := siblings(t, dest); len(got) != 0 {
				t.Errorf("left beside the destination: %v", got)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dest), "..", "evil")); err == nil {
				t.Errorf("an entry escaped the destination")
			}
		})
	}
	t.Run("valid control", func(t *testing.T) {
		if _, err := Unpack(bytes.NewReader(valid), filepath.Join(t.TempDir(), "dest"), UnpackOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// toHalf converts to IEEE fp16, rounding to nearest even. Tests cannot use
// kernels/safetensors' converter: artifacts imports nothing of ours.
func toHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		h := uint16(mant >> shift)
		rem, halfway := mant&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > halfway || rem == halfway && h&1 == 1 {
			h++
		}
		return sign | h
	}
	h := sign | uint16(exp)<<10 | uint16(mant>>13)
	if rem := mant & 0x1fff; rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // a carry into the exponent is still the right answer
	}
	return h
}

func TestToHalf(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		want uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.1, 0x2e66}, {65504, 0x7bff}, {1e6, 0x7c00},
		{6.103515625e-05, 0x0400}, {5.960464477539063e-08, 0x0001}, {1e-9, 0}, {0.02, 0x251f},
	} {
		if got := toHalf(tc.f); got != tc.want {
			t.Errorf("toHalf(%g) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
}

// syntheticSafetensors is a one-tensor fp16 safetensors file of n values:
// drawn from N(0, std) like trained weights, or uniformly random bits when
// std is 0, the worst case.
func syntheticSafetensors(n int, std float64) []byte {
	header := fmt.Sprintf(`{"w":{"dtype":"F16","shape":[%d],"data_offsets":[0,%d]}}`, n, 2*n)
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	rng := rand.New(rand.NewPCG(3, 4))
	for range n {
		v := uint16(rng.Uint32())
		if std != 0 {
			v = toHalf(float32(rng.NormFloat64() * std))
		}
		out = binary.LittleEndian.AppendUint16(out, v)
	}
	return out
}

// writeWeightsBundle writes a bundle whose only weights are data.
func writeWeightsBundle(t testing.TB, dir string, data []byte) {
	t.Helper()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.AddBytes("weights/unet.safetensors", data); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddBytes("configs/unet.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m := sampleManifest()
	m.Components = m.Components[:1]
	m.Programs = nil
	m.Components[0].Bytes = int64(len(data)) - 128
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
}

// TestCompressionRatios measures what zstd saves on fp16 weights at each
// level; `go test -v -run CompressionRatios ./artifacts` prints the table.
// The golden file is the tiny SD1.5 checkpoint (random-initialized small
// weights); the synthetic ones bracket it: N(0, 0.02) like trained
// weights, and uniformly random bits, which nothing compresses.
func TestCompressionRatios(t *testing.T) {
	inputs := []struct {
		name string
		data func(t *testing.T) []byte
		// minDefault is the least ratio CompressDefault must reach: the
		// reason it is the default.
		minDefault float64
	}{
		{"golden tiny-sd15 fp16", func(t *testing.T) []byte {
			data, err := os.ReadFile(filepath.Join(goldenDir(t), "tiny-sd15-single-file-fp16.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			return data
		}, 1.05},
		{"synthetic N(0,0.02) fp16", func(*testing.T) []byte { return syntheticSafetensors(4<<20, 0.02) }, 1.05},
		{"synthetic random bits", func(*testing.T) []byte { return syntheticSafetensors(4<<20, 0) }, 0},
	}
	levels := []Compression{CompressNone, CompressFastest, CompressDefault, CompressBetter}
	if !testing.Short() {
		levels = append(levels, CompressBest)
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			writeWeightsBundle(t, dir, in.data(t))
			for _, c := range levels {
				start := time.Now()
				archive, stats := packBytes(t, dir, PackOptions{Compression: c})
				packed := time.Since(start)
				start = time.Now()
				if _, err := Unpack(bytes.NewReader(archive), filepath.Join(t.TempDir(), "u"), UnpackOptions{NoSync: true}); err != nil {
					t.Fatal(err)
				}
				t.Logf("%-13s ratio %.3f  saved %5.1f%%  pack %6.1f MB/s  unpack+verify %6.1f MB/s",
					c, stats.Ratio(), 100*(1-1/stats.Ratio()),
					mbps(stats.TarBytes, packed), mbps(stats.TarBytes, time.Since(start)))
				// zstd stores incompressible blocks raw, so it never costs
				// more than its framing.
				if stats.ArchiveBytes > stats.TarBytes+stats.TarBytes/1000+1024 {
					t.Errorf("%s expanded the tar: %v", c, stats)
				}
				if c == CompressDefault && stats.Ratio() < in.minDefault {
					t.Errorf("%s ratio %.3f, want at least %.2f", c, stats.Ratio(), in.minDefault)
				}
			}
		})
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func benchmarkBundle(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "b")
	writeWeightsBundle(b, dir, syntheticSafetensors(8<<20, 0.02))
	return dir
}

func BenchmarkPack(b *testing.B) {
	dir := benchmarkBundle(b)
	for _, c := range []Compression{CompressNone, CompressFastest, CompressDefault, CompressBetter, CompressBest} {
		b.Run(c.String(), func(b *testing.B) {
			var stats PackStats
			for b.Loop() {
				var err error
				if stats, err = Pack(dir, io.Discard, PackOptions{Compression: c}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(stats.TarBytes)
			b.ReportMetric(stats.Ratio(), "ratio")
		})
	}
}

func BenchmarkUnpack(b *testing.B) {
	dir := benchmarkBundle(b)
	for _, c := range []Compression{CompressNone, CompressDefault} {
		b.Run(c.String(), func(b *testing.B) {
			archive, stats := packBytes(b, dir, PackOptions{Compression: c})
			b.SetBytes(stats.TarBytes)
			for i := 0; b.Loop(); i++ {
				if _, err := Unpack(bytes.NewReader(archive), filepath.Join(b.TempDir(), fmt.Sprint(i)), UnpackOptions{NoSync: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen measures what verification adds to cold start.
func BenchmarkOpen(b *testing.B) {
	dir := benchmarkBundle(b)
	for _, mode := range []struct {
		name string
		v    VerifyMode
	}{{"full", VerifyFull}, {"sizes", VerifySizes}, {"none", VerifyNone}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetBytes(16 << 20)
			for b.Loop() {
				if _, err := Open(dir, Options{Verify: mode.v}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
