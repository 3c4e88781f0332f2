package artifacts

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The format version this package writes. Readers accept any minor of
// FormatMajor: minors only add optional fields.
const (
	FormatMajor = 1
	FormatMinor = 1
)

const (
	// ManifestName is the manifest's path inside a bundle.
	ManifestName = "manifest.json"
	// MaxManifestSize bounds how much of a manifest a reader will load, so a
	// hostile bundle cannot make cold start allocate without limit.
	MaxManifestSize = 16 << 20

	// maxFileSize is far above any real checkpoint; it keeps size sums from
	// overflowing int64.
	maxFileSize = 1 << 40
	// maxBucketSide is far above what any SD model is trained for.
	maxBucketSide = 16384
	maxBatch      = 1024
	// maxTensors is far above SDXL's UNet (about 1700).
	maxTensors = 1 << 20
)

// Known values of Manifest.DType and Component.Kind. Validation accepts any
// lower-case token so that a newer minor can add one; the function decides
// what it can serve.
const (
	DTypeFloat16  = "float16"
	DTypeBFloat16 = "bfloat16"
	DTypeFloat32  = "float32"

	KindTextEncoder = "text_encoder"
	KindUNet        = "unet"
	KindControlNet  = "controlnet"
	KindVAE         = "vae"
)

// Fixed paths of the bundle layout (see the package doc).
const (
	// TokenizerDir holds the CLIP tokenizer files.
	TokenizerDir = "tokenizer"
	// SchedulerConfigPath is diffusers' scheduler_config.json.
	SchedulerConfigPath = "scheduler_config.json"
)

var (
	// ErrUnsupportedVersion reports a manifest whose format major version
	// this reader does not understand.
	ErrUnsupportedVersion = errors.New("unsupported bundle format version")
	// ErrInvalidManifest reports a manifest that breaks the schema's rules.
	ErrInvalidManifest = errors.New("invalid manifest")
)

// Version is a bundle format version. It is written to JSON as "major.minor".
type Version struct {
	Major, Minor int
}

// CurrentVersion returns the version this package writes.
func CurrentVersion() Version { return Version{FormatMajor, FormatMinor} }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// MarshalText implements encoding.TextMarshaler.
func (v Version) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *Version) UnmarshalText(b []byte) error {
	major, minor, ok := strings.Cut(string(b), ".")
	if !ok {
		return fmt.Errorf("format version %q: want major.minor", b)
	}
	var err error
	if v.Major, err = parseVersionPart(major); err == nil {
		v.Minor, err = parseVersionPart(minor)
	}
	if err != nil {
		return fmt.Errorf("format version %q: %w", b, err)
	}
	return nil
}

// parseVersionPart accepts plain decimal digits only: strconv.Atoi would
// also take "+1" and "-0".
func parseVersionPart(s string) (int, error) {
	if s == "" || len(s) > 6 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a version number", s)
	}
	return strconv.Atoi(s)
}

// Manifest describes a bundle: what it was built from, what it holds, and
// the size and sha256 of every file in it.
type Manifest struct {
	FormatVersion Version   `json:"format_version"`
	BuildID       uuid.UUID `json:"build_id"`
	Created       time.Time `json:"created"`
	// ToolVersion names the compiler that wrote the bundle.
	ToolVersion string `json:"tool_version"`
	// DType is the dtype of the stored weights, e.g. DTypeFloat16.
	DType      string      `json:"dtype"`
	Sources    []Source    `json:"sources"`
	LoRAs      []LoRA      `json:"loras,omitempty"`
	Buckets    []Bucket    `json:"buckets"`
	Components []Component `json:"components"`
	// Programs are the computations the function compiles, traced by the
	// compiler and stored as StableHLO text (format 1.1).
	Programs []Program `json:"programs,omitempty"`
	// Files lists every file of the bundle except the manifest and cache/.
	Files []File `json:"files"`
}

// Source is an input the compiler read. Path is where it was on the build
// machine, kept for provenance; it is not a path inside the bundle.
type Source struct {
	Path string `json:"path"`
	// Role says what the source was, e.g. "checkpoint", "controlnet", "vae".
	Role   string `json:"role"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// LoRA is an adapter merged into the weights.
type LoRA struct {
	File   string  `json:"file"`
	SHA256 string  `json:"sha256"`
	Scale  float64 `json:"scale"`
	// Format is the naming convention it was read in, e.g. "kohya", "peft".
	Format string `json:"format"`
}

// Bucket is a shape the programs were compiled for.
type Bucket struct {
	Width  int `json:"width"`
	Height int `json:"height"`
	Batch  int `json:"batch"`
}

func (b Bucket) String() string { return fmt.Sprintf("%dx%dx%d", b.Width, b.Height, b.Batch) }

// Component is one model of the pipeline.
type Component struct {
	// Name is unique in the bundle, e.g. "unet" or "controlnet.0".
	Name string `json:"name"`
	// Kind is the model family, e.g. KindControlNet.
	Kind string `json:"kind"`
	// Config and Weights are bundle paths, listed in Manifest.Files.
	Config  string `json:"config"`
	Weights string `json:"weights"`
	Tensors int    `json:"tensors"`
	// Bytes is the tensor data, which is the weight file less its header.
	Bytes int64 `json:"bytes"`
	// SHA256 repeats the weight file's hash so that a component can be
	// identified without the files list; Validate keeps the two equal.
	SHA256 string `json:"sha256"`
}

// Program is one traced computation of the pipeline: a text encoder, a
// fused ControlNet + UNet denoising step, or a VAE decoder at one shape.
type Program struct {
	// Name is the trace's name, e.g. "step_b2_64x64_cn1"; it is unique.
	Name string `json:"name"`
	// Buckets are the shape buckets that use the program (a text encoder
	// serves them all).
	Buckets []Bucket `json:"buckets"`
	// File is its StableHLO text (ProgramPath), listed in Files.
	File string `json:"file"`
	// SHA256 repeats the file's hash: it identifies the program, and the
	// executable cache is keyed by it (CacheKey).
	SHA256 string `json:"sha256"`
}

// File is one file of a bundle.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// WeightsPath is the conventional bundle path of a component's weights.
func WeightsPath(component string) string { return "weights/" + component + ".safetensors" }

// ConfigPath is the conventional bundle path of a component's config.
func ConfigPath(component string) string { return "configs/" + component + ".json" }

// ProgramPath is the conventional bundle path of a program's StableHLO.
func ProgramPath(name string) string { return "programs/" + name + ".mlir" }

// ParseManifest decodes and validates a manifest. It checks the format
// version before decoding the rest, so a bundle from a future major fails
// with ErrUnsupportedVersion rather than a confusing schema error.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("%s: %d bytes exceeds the %d byte limit", ManifestName, len(data), MaxManifestSize)
	}
	var head struct {
		FormatVersion *Version `json:"format_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if head.FormatVersion == nil {
		return nil, fmt.Errorf("%s: %w: no format_version", ManifestName, ErrInvalidManifest)
	}
	if err := checkVersion(*head.FormatVersion); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	m := new(Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	return m, nil
}

// Marshal encodes the manifest as indented JSON, the form written to disk.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func checkVersion(v Version) error {
	if v.Major != FormatMajor {
		return fmt.Errorf("%w: bundle is format %s, this reader understands %d.x; rebuild the bundle with a matching compiler or use a matching controlfn",
			ErrUnsupportedVersion, v, FormatMajor)
	}
	return nil
}

// Validate checks the rules a reader relies on: required fields are set,
// numbers are sane, every path is relative, clean and inside the bundle,
// nothing is listed twice, and every path a component or program names is
// in the files list with the hash the component claims. It returns the
// first problem found.
func (m *Manifest) Validate() error {
	if err := checkVersion(m.FormatVersion); err != nil {
		return err
	}
	if m.BuildID == uuid.Nil {
		return invalidf("build_id is missing")
	}
	if m.Created.IsZero() {
		return invalidf("created is missing")
	}
	if err := checkText(m.ToolVersion); err != nil {
		return invalidf("tool_version: %v", err)
	}
	if err := checkToken(m.DType, "_"); err != nil {
		return invalidf("dtype: %v", err)
	}
	files, err := m.validateFiles()
	if err != nil {
		return err
	}
	if len(m.Sources) == 0 {
		return invalidf("sources is empty")
	}
	for i, s := range m.Sources {
		if err := s.validate(); err != nil {
			return invalidf("sources[%d]: %v", i, err)
		}
	}
	for i, l := range m.LoRAs {
		if err := l.validate(); err != nil {
			return invalidf("loras[%d]: %v", i, err)
		}
	}
	if len(m.Buckets) == 0 {
		return invalidf("buckets is empty")
	}
	buckets := make(map[Bucket]bool, len(m.Buckets))
	for i, b := range m.Buckets {
		if err := b.validate(); err != nil {
			return invalidf("buckets[%d]: %v", i, err)
		}
		if buckets[b] {
			return invalidf("buckets[%d]: %s listed twice", i, b)
		}
		buckets[b] = true
	}
	if len(m.Components) == 0 {
		return invalidf("components is empty")
	}
	names := make(map[string]bool, len(m.Components))
	for i, c := range m.Components {
		if err := c.validate(files); err != nil {
			return invalidf("components[%d] (%s): %v", i, c.Name, err)
		}
		if names[c.Name] {
			return invalidf("components[%d]: name %q listed twice", i, c.Name)
		}
		names[c.Name] = true
	}
	programs := make(map[string]bool, len(m.Programs))
	for i, p := range m.Programs {
		if err := p.validate(files, buckets); err != nil {
			return invalidf("programs[%d] (%s): %v", i, p.Name, err)
		}
		if programs[p.Name] {
			return invalidf("programs[%d]: name %q listed twice", i, p.Name)
		}
		programs[p.Name] = true
	}
	return nil
}

// validateFiles checks the files list and returns it keyed by path.
func (m *Manifest) validateFiles() (map[string]File, error) {
	if len(m.Files) == 0 {
		return nil, invalidf("files is empty")
	}
	files := make(map[string]File, len(m.Files))
	for i, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return nil, invalidf("files[%d]: %v", i, err)
		}
		if isReserved(f.Path) {
			return nil, invalidf("files[%d]: %s is never listed", i, f.Path)
		}
		if f.Size < 0 || f.Size > maxFileSize {
			return nil, invalidf("files[%d] (%s): size %d out of range", i, f.Path, f.Size)
		}
		if err := checkSHA256(f.SHA256); err != nil {
			return nil, invalidf("files[%d] (%s): %v", i, f.Path, err)
		}
		if _, dup := files[f.Path]; dup {
			return nil, invalidf("files[%d]: %s listed twice", i, f.Path)
		}
		files[f.Path] = f
	}
	// A path cannot be both a file and a directory on disk; such a list
	// could only have come from a bug or an edit.
	for p := range files {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := files[dir]; ok {
				return nil, invalidf("files: %s is listed as a file and as the directory of %s", dir, p)
			}
		}
	}
	return files, nil
}

func (s Source) validate() error {
	if err := checkText(s.Path); err != nil {
		return fmt.Errorf("path: %v", err)
	}
	if err := checkText(s.Role); err != nil {
		return fmt.Errorf("role: %v", err)
	}
	if s.Size < 0 || s.Size > maxFileSize {
		return fmt.Errorf("size %d out of range", s.Size)
	}
	return checkSHA256(s.SHA256)
}

func (l LoRA) validate() error {
	if err := checkText(l.File); err != nil {
		return fmt.Errorf("file: %v", err)
	}
	if err := checkSHA256(l.SHA256); err != nil {
		return err
	}
	if math.IsNaN(l.Scale) || math.IsInf(l.Scale, 0) {
		return fmt.Errorf("scale %v is not finite", l.Scale)
	}
	if err := checkToken(l.Format, "_-"); err != nil {
		return fmt.Errorf("format: %v", err)
	}
	return nil
}

func (b Bucket) validate() error {
	for _, side := range []int{b.Width, b.Height} {
		if side <= 0 || side > maxBucketSide || side%8 != 0 {
			return fmt.Errorf("%s: width and height must be multiples of 8 in [8, %d]", b, maxBucketSide)
		}
	}
	if b.Batch <= 0 || b.Batch > maxBatch {
		return fmt.Errorf("%s: batch must be in [1, %d]", b, maxBatch)
	}
	return nil
}

func (c Component) validate(files map[string]File) error {
	if err := checkToken(c.Name, "_.-"); err != nil {
		return fmt.Errorf("name: %v", err)
	}
	if err := checkToken(c.Kind, "_"); err != nil {
		return fmt.Errorf("kind: %v", err)
	}
	if _, ok := files[c.Config]; !ok {
		return fmt.Errorf("config %q is not in files", c.Config)
	}
	w, ok := files[c.Weights]
	if !ok {
		return fmt.Errorf("weights %q is not in files", c.Weights)
	}
	if c.Tensors <= 0 || c.Tensors > maxTensors {
		return fmt.Errorf("tensors %d out of range [1, %d]", c.Tensors, maxTensors)
	}
	if c.Bytes <= 0 || c.Bytes > w.Size {
		return fmt.Errorf("bytes %d out of range (weight file is %d bytes)", c.Bytes, w.Size)
	}
	if c.SHA256 != w.SHA256 {
		return fmt.Errorf("sha256 %q differs from the files entry of %s", c.SHA256, c.Weights)
	}
	return nil
}

func (p Program) validate(files map[string]File, buckets map[Bucket]bool) error {
	if err := checkToken(p.Name, "_."); err != nil {
		return fmt.Errorf("name: %v", err)
	}
	if len(p.Buckets) == 0 {
		return errors.New("buckets is empty")
	}
	seen := make(map[Bucket]bool, len(p.Buckets))
	for _, b := range p.Buckets {
		if !buckets[b] {
			return fmt.Errorf("bucket %s is not in the manifest's buckets", b)
		}
		if seen[b] {
			return fmt.Errorf("bucket %s listed twice", b)
		}
		seen[b] = true
	}
	f, ok := files[p.File]
	if !ok {
		return fmt.Errorf("file %q is not in files", p.File)
	}
	if p.SHA256 != f.SHA256 {
		return fmt.Errorf("sha256 %q differs from the files entry of %s", p.SHA256, p.File)
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(format, args...))
}

// checkPath accepts a slash-separated path that names something strictly
// inside the bundle on every platform: relative, already clean, no "..",
// no backslash or colon (separators or drive letters on Windows), no
// control characters.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > 1024:
		return fmt.Errorf("path %.40q... is too long", p)
	case !utf8.ValidString(p):
		return fmt.Errorf("path %q is not UTF-8", p)
	case strings.ContainsAny(p, `\:`):
		return fmt.Errorf("path %q contains a backslash or colon", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is absolute", p)
	case path.Clean(p) != p || p == ".":
		return fmt.Errorf("path %q is not clean", p)
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return fmt.Errorf("path %q contains a control character", p)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == ".." {
			return fmt.Errorf("path %q leaves the bundle", p)
		}
		if len(seg) > 255 {
			return fmt.Errorf("path %q has an element over 255 bytes", p)
		}
	}
	return nil
}

// isReserved reports whether p is the manifest, the cache, or inside
// either: paths the files list never holds.
func isReserved(p string) bool {
	top, _, _ := strings.Cut(p, "/")
	return top == ManifestName || top == cacheDirName
}

// checkText accepts a non-empty printable string; these fields end up in
// `controlfn inspect` output, where control characters could rewrite the
// terminal.
func checkText(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	if len(s) > 4096 || !utf8.ValidString(s) {
		return fmt.Errorf("%.40q is too long or not UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q contains a control character", s)
		}
	}
	return nil
}

// checkToken accepts a short lower-case identifier that may also contain
// the given punctuation.
func checkToken(s, punct string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%q must be 1 to 64 characters", s)
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || strings.ContainsRune(punct, r)) {
			return fmt.Errorf("%q may hold only a-z, 0-9 and %q", s, punct)
		}
	}
	return nil
}

func checkSHA256(s string) error {
	if len(s) != 64 || !isLowerHex(s) {
		return fmt.Errorf("sha256 %q is not 64 lower-case hex digits", s)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
