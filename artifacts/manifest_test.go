package artifacts

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func sum(c byte) string { return strings.Repeat(string(c), 64) }

// validManifest is a complete manifest with made-up but consistent hashes.
func validManifest() *Manifest {
	return &Manifest{
		FormatVersion: CurrentVersion(),
		BuildID:       uuid.MustParse("3f1e4c1a-9a51-4b61-8f8e-5c8b5f0a2d11"),
		Created:       time.Date(2025, 11, 27, 16, 53, 0, 0, time.UTC),
		ToolVersion:   "controlfn test",
		DType:         DTypeFloat16,
		Sources: []Source{
			{Path: "/models/v1-5.safetensors", Role: "checkpoint", Size: 100, SHA256: sum('1')},
		},
		LoRAs:   []LoRA{{File: "style.safetensors", SHA256: sum('2'), Scale: 0.8, Format: "kohya"}},
		Buckets: []Bucket{{512, 512, 1}, {768, 512, 2}},
		Components: []Component{{
			Name: "unet", Kind: KindUNet, Config: "configs/unet.json", Weights: "weights/unet.safetensors",
			Tensors: 686, Bytes: 900, SHA256: sum('a'),
		}, {
			Name: "controlnet.0", Kind: KindControlNet, Config: "configs/controlnet.0.json", Weights: "weights/controlnet.0.safetensors",
			Tensors: 340, Bytes: 500, SHA256: sum('b'),
		}},
		Programs: []Program{
			{Name: "clip_text_b1_t77_skip0", Buckets: []Bucket{{512, 512, 1}, {768, 512, 2}}, File: "programs/clip_text_b1_t77_skip0.mlir", SHA256: sum('f')},
			{Name: "step_b2_64x64_cn1", Buckets: []Bucket{{512, 512, 1}}, File: "programs/step_b2_64x64_cn1.mlir", SHA256: sum('e')},
		},
		Files: []File{
			{Path: "configs/controlnet.0.json", Size: 10, SHA256: sum('c')},
			{Path: "configs/unet.json", Size: 10, SHA256: sum('d')},
			{Path: "programs/clip_text_b1_t77_skip0.mlir", Size: 10, SHA256: sum('f')},
			{Path: "programs/step_b2_64x64_cn1.mlir", Size: 10, SHA256: sum('e')},
			{Path: "weights/controlnet.0.safetensors", Size: 600, SHA256: sum('b')},
			{Path: "weights/unet.safetensors", Size: 1000, SHA256: sum('a')},
		},
	}
}

func TestVersionText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		ok   bool
	}{
		{"1.0", Version{1, 0}, true},
		{"2.17", Version{2, 17}, true},
		{"01.002", Version{1, 2}, true},
		{"1", Version{}, false},
		{"1.", Version{}, false},
		{".1", Version{}, false},
		{"1.0.0", Version{}, false},
		{"+1.0", Version{}, false},
		{"-1.0", Version{}, false},
		{"1.0 ", Version{}, false},
		{"9999999.0", Version{}, false},
	} {
		var v Version
		err := v.UnmarshalText([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && v != tc.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, ok=%v", tc.in, v, err, tc.want, tc.ok)
		}
		if tc.ok {
			if got, _ := tc.want.MarshalText(); string(got) != tc.want.String() {
				t.Errorf("MarshalText(%v) = %q", tc.want, got)
			}
		}
	}
}

func TestParseManifestRoundTrip(t *testing.T) {
	m := validManifest()
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"format_version": "1.1"`) {
		t.Errorf("format_version not written as a string:\n%s", data)
	}
	got, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Marshal()
	if string(again) != string(data) {
		t.Errorf("round trip changed the manifest:\n%s\nvs\n%s", data, again)
	}
}

func TestParseManifestVersions(t *testing.T) {
	encode := func(edit func(map[string]any)) []byte {
		data, _ := validManifest().Marshal()
		var raw map[string]any
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatal(err)
		}
		edit(raw)
		out, _ := json.Marshal(raw)
		return out
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr error
		wantMsg string
	}{
		{"newer minor with new fields", encode(func(m map[string]any) {
			m["format_version"] = "1.7"
			m["signature"] = map[string]any{"alg": "ed25519"}
		}), nil, ""},
		{"newer major", encode(func(m map[string]any) {
			m["format_version"] = "2.0"
			m["components"] = "a shape this reader cannot decode"
		}), ErrUnsupportedVersion, "bundle is format 2.0, this reader understands 1.x"},
		{"older major", encode(func(m map[string]any) { m["format_version"] = "0.9" }), ErrUnsupportedVersion, "format 0.9"},
		{"no version", encode(func(m map[string]any) { delete(m, "format_version") }), ErrInvalidManifest, "no format_version"},
		{"version as number", encode(func(m map[string]any) { m["format_version"] = 1.0 }), nil, "format_version"},
		{"not json", []byte("{"), nil, "manifest.json: unexpected end"},
		{"trailing data", append(encode(func(map[string]any) {}), "{}"...), nil, "manifest.json: invalid character"},
		{"too big", make([]byte, MaxManifestSize+1), nil, "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseManifest(tc.data)
			if tc.wantMsg == "" && tc.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseManifest: %v", err)
				}
				if m.FormatVersion.Minor != 7 {
					t.Errorf("minor = %d, want 7", m.FormatVersion.Minor)
				}
				return
			}
			if err == nil {
				t.Fatal("ParseManifest succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %q is not %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
		want string // "" means valid
	}{
		{"valid", func(m *Manifest) {}, ""},
		{"no loras", func(m *Manifest) { m.LoRAs = nil }, ""},
		{"negative lora scale", func(m *Manifest) { m.LoRAs[0].Scale = -0.5 }, ""},

		{"nil build id", func(m *Manifest) { m.BuildID = uuid.Nil }, "build_id is missing"},
		{"zero created", func(m *Manifest) { m.Created = time.Time{} }, "created is missing"},
		{"no tool", func(m *Manifest) { m.ToolVersion = "" }, "tool_version: missing"},
		{"tool with escape", func(m *Manifest) { m.ToolVersion = "x\x1b[2J" }, "control character"},
		{"dtype case", func(m *Manifest) { m.DType = "Float16" }, "dtype"},
		{"no sources", func(m *Manifest) { m.Sources = nil }, "sources is empty"},
		{"source bad sha", func(m *Manifest) { m.Sources[0].SHA256 = "ABC" }, "sources[0]: sha256"},
		{"source negative size", func(m *Manifest) { m.Sources[0].Size = -1 }, "sources[0]: size -1"},
		{"lora nan scale", func(m *Manifest) { m.LoRAs[0].Scale = math.NaN() }, "not finite"},
		{"lora inf scale", func(m *Manifest) { m.LoRAs[0].Scale = math.Inf(1) }, "not finite"},
		{"lora no format", func(m *Manifest) { m.LoRAs[0].Format = "" }, "loras[0]: format"},
		{"no buckets", func(m *Manifest) { m.Buckets = nil }, "buckets is empty"},
		{"bucket not multiple of 8", func(m *Manifest) { m.Buckets[0].Width = 500 }, "multiples of 8"},
		{"bucket zero batch", func(m *Manifest) { m.Buckets[0].Batch = 0 }, "batch"},
		{"bucket huge", func(m *Manifest) { m.Buckets[0].Height = 1 << 20 }, "multiples of 8"},
		{"duplicate bucket", func(m *Manifest) { m.Buckets[1] = m.Buckets[0] }, "listed twice"},
		{"no components", func(m *Manifest) { m.Components = nil }, "components is empty"},
		{"duplicate component", func(m *Manifest) { m.Components[1].Name = "unet" }, `name "unet" listed twice`},
		{"component name", func(m *Manifest) { m.Components[0].Name = "../unet" }, "name"},
		{"component no kind", func(m *Manifest) { m.Components[0].Kind = "" }, "kind"},
		{"weights not listed", func(m *Manifest) { m.Components[0].Weights = "weights/other.safetensors" }, "weights \"weights/other.safetensors\" is not in files"},
		{"config not listed", func(m *Manifest) { m.Components[0].Config = "" }, "config"},
		{"zero tensors", func(m *Manifest) { m.Components[0].Tensors = 0 }, "tensors 0 out of range"},
		{"absurd tensors", func(m *Manifest) { m.Components[0].Tensors = 1 << 30 }, "out of range"},
		{"bytes over file", func(m *Manifest) { m.Components[0].Bytes = 1001 }, "bytes 1001 out of range"},
		{"component sha differs", func(m *Manifest) { m.Components[0].SHA256 = sum('f') }, "differs from the files entry"},
		{"program unknown bucket", func(m *Manifest) { m.Programs[0].Buckets[0].Batch = 4 }, "not in the manifest's buckets"},
		{"program bucket twice", func(m *Manifest) { m.Programs[0].Buckets[1] = m.Programs[0].Buckets[0] }, "listed twice"},
		{"program without buckets", func(m *Manifest) { m.Programs[1].Buckets = nil }, "buckets is empty"},
		{"program name twice", func(m *Manifest) { m.Programs[1].Name = m.Programs[0].Name }, "listed twice"},
		{"program bad name", func(m *Manifest) { m.Programs[0].Name = "../x" }, "name"},
		{"program wrong hash", func(m *Manifest) { m.Programs[0].SHA256 = sum('e') }, "differs from the files entry"},
		{"program without file", func(m *Manifest) { m.Programs[0].File = "" }, "not in files"},
		{"program file not listed", func(m *Manifest) { m.Programs[0].File = "programs/x.mlir" }, "not in files"},
		{"no files", func(m *Manifest) { m.Files = nil }, "files is empty"},
		{"duplicate file", func(m *Manifest) { m.Files = append(m.Files, m.Files[0]) }, "listed twice"},
		{"file negative size", func(m *Manifest) { m.Files[0].Size = -1 }, "size -1"},
		{"file huge size", func(m *Manifest) { m.Files[0].Size = math.MaxInt64 }, "out of range"},
		{"file bad sha", func(m *Manifest) { m.Files[0].SHA256 = sum('g') }, "sha256"},
		{"file lists manifest", func(m *Manifest) { m.Files[0].Path = ManifestName }, "never listed"},
		{"file lists cache", func(m *Manifest) { m.Files[0].Path = "cache/go-cpu/x.exec" }, "never listed"},
		{"file is also dir", func(m *Manifest) { m.Files[0].Path = "weights" }, "listed as a file and as the directory"},
		{"absolute path", func(m *Manifest) { m.Files[0].Path = "/etc/passwd" }, "absolute"},
		{"dot dot", func(m *Manifest) { m.Files[0].Path = "../x" }, "leaves the bundle"},
		{"inner dot dot", func(m *Manifest) { m.Files[0].Path = "a/../b" }, "not clean"},
		{"backslash", func(m *Manifest) { m.Files[0].Path = `weights\x` }, "backslash"},
		{"drive letter", func(m *Manifest) { m.Files[0].Path = "C:x" }, "colon"},
		{"double slash", func(m *Manifest) { m.Files[0].Path = "a//b" }, "not clean"},
		{"dot", func(m *Manifest) { m.Files[0].Path = "." }, "not clean"},
		{"trailing slash", func(m *Manifest) { m.Files[0].Path = "a/" }, "not clean"},
		{"control char", func(m *Manifest) { m.Files[0].Path = "a\nb" }, "control character"},
		{"bad utf8", func(m *Manifest) { m.Files[0].Path = "a\xffb" }, "UTF-8"},
		{"long element", func(m *Manifest) { m.Files[0].Path = strings.Repeat("x", 256) }, "over 255 bytes"},
		{"unknown major", func(m *Manifest) { m.FormatVersion.Major = 2 }, "unsupported bundle format version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := validManifest()
			tc.edit(m)
			err := m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestConventionalPaths(t *testing.T) {
	for _, p := range []string{
		WeightsPath("controlnet.0"), ConfigPath("text_encoder"), ProgramPath("vae_decoder_b1_64x96"),
	} {
		if err := checkPath(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if got, want := ProgramPath("step_b2_64x64_cn1"), "programs/step_b2_64x64_cn1.mlir"; got != want {
		t.Errorf("ProgramPath = %q, want %q", got, want)
	}
}
