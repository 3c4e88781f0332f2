package imageproc

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeFile(t *testing.T, path string) *RGB {
	t.Helper()
	m, err := Decode(readFile(t, path), 0)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return m
}

// goTestdata finds the image/testdata folder of the toolchain that runs the
// test, where canny_ref's video-001.png comes from.
func goTestdata(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(runtime.GOROOT(), "src", "image", "testdata", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("Go source testdata %s not available: %v", p, err)
	}
	return p
}

func goldenU8(t *testing.T, f *safetensors.File, name string) ([]uint8, []int) {
	t.Helper()
	raw, info, err := f.Raw(name)
	if err != nil {
		t.Fatalf("tensor %s: %v", name, err)
	}
	if info.DType != safetensors.U8 {
		t.Fatalf("tensor %s is %s, want U8", name, info.DType)
	}
	return raw, info.Shape
}

func TestCannyGolden(t *testing.T) {
	f, err := safetensors.Open(golden.Path(t, "canny_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	tests := []struct {
		name, input, edgesPNG string
	}{
		{"video001", goTestdata(t, "video-001.png"), golden.Path(t, "canny_video-001.png")},
		{"photo2", golden.Path(t, "canny_photo2_input.png"), golden.Path(t, "canny_photo2.png")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := decodeFile(t, tt.input)
			gray, err := ToGray(img)
			if err != nil {
				t.Fatal(err)
			}
			wantGray, shape := goldenU8(t, f, tt.name+"_gray")
			if shape[0] != gray.Height || shape[1] != gray.Width {
				t.Fatalf("gray shape %v, have %dx%d", shape, gray.Width, gray.Height)
			}
			if d := countDiff(gray.Pix, wantGray); d != 0 {
				t.Errorf("gray: %d of %d pixels differ from cv2.cvtColor", d, len(wantGray))
			}

			// Run Canny on the reference grey so that the edge check
			// isolates Canny itself.
			edges, err := Canny(&Gray{Width: gray.Width, Height: gray.Height, Pix: wantGray}, 100, 200)
			if err != nil {
				t.Fatal(err)
			}
			wantEdges, _ := goldenU8(t, f, tt.name+"_edges")
			d := countDiff(edges.Pix, wantEdges)
			match := 100 * float64(len(wantEdges)-d) / float64(len(wantEdges))
			t.Logf("%s: edges match cv2.Canny on %.4f%% of %d pixels (%d differ)", tt.name, match, len(wantEdges), d)
			if match < 99.5 {
				t.Errorf("edges match %.4f%%, want >= 99.5%%", match)
			}

			// The same map stored as PNG.
			pngEdges := decodeFile(t, tt.edgesPNG)
			g3, err := edges.ToRGB()
			if err != nil {
				t.Fatal(err)
			}
			if d := countDiff(g3.Pix, pngEdges.Pix); d != 0 {
				t.Errorf("edges differ from %s in %d bytes", filepath.Base(tt.edgesPNG), d)
			}
		})
	}
}

func countDiff(a, b []uint8) int {
	if len(a) != len(b) {
		return max(len(a), len(b))
	}
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// e2e_control_64.png is canny_video-001.png resized to 64×64 by PIL NEAREST.
func TestNearestGolden(t *testing.T) {
	src := decodeFile(t, golden.Path(t, "canny_video-001.png"))
	want := decodeFile(t, golden.Path(t, "e2e_control_64.png"))
	got, err := Resize(src, 64, 64, Nearest)
	if err != nil {
		t.Fatal(err)
	}
	if d := countDiff(got.Pix, want.Pix); d != 0 {
		t.Errorf("NEAREST 150x103 -> 64x64: %d of %d bytes differ from PIL", d, len(want.Pix))
	}
}

// control_image_preprocessed is VaeImageProcessor.preprocess of
// e2e_control_64.png at 64×64 (no resize): it must match bit for bit.
func TestPrepareGolden(t *testing.T) {
	f, err := safetensors.Open(golden.Path(t, "e2e_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, shape, err := f.Float32s("control_image_preprocessed")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Prepare(readFile(t, golden.Path(t, "e2e_control_64.png")), Options{Width: 64, Height: 64})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, shape) {
		t.Fatalf("shape %v, want %v", got.Shape, shape)
	}
	for i := range want {
		if got.Data[i] != want[i] {
			t.Fatalf("value %d = %v, want %v (bitwise equality expected)", i, got.Data[i], want[i])
		}
	}
}

// The full Canny path from the request bytes: decode -> grey -> Canny ->
// three channels, against the golden edge map, with no resize.
func TestPrepareCannyGolden(t *testing.T) {
	data := readFile(t, goTestdata(t, "video-001.png"))
	got, err := Prepare(data, Options{Width: 150, Height: 103, Canny: true, CannyLow: 200, CannyHigh: 100})
	if err != nil {
		t.Fatal(err)
	}
	edges := decodeFile(t, golden.Path(t, "canny_video-001.png"))
	want, err := ToTensor(edges)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, want.Shape) {
		t.Fatalf("shape %v, want %v", got.Shape, want.Shape)
	}
	n := 0
	for i := range want.Data {
		if got.Data[i] != want.Data[i] {
			n++
		}
	}
	if n != 0 {
		t.Errorf("%d of %d values differ (thresholds given swapped on purpose)", n, len(want.Data))
	}
}
