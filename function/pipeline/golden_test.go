package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

const (
	e2eFile   = "e2e_ref.safetensors"
	extraFile = "e2e_extra_ref.safetensors"

	e2ePrompt   = "a photo of a red cube on a wooden table, high quality"
	e2eNegative = "blurry, low quality"
)

// openTiny loads the golden tiny-sd15 folder with the given ControlNet
// subfolders.
func openTiny(t testing.TB, controlNets ...string) *Components {
	t.Helper()
	dir := golden.Path(t, "tiny-sd15")
	var dirs []string
	for _, cn := range controlNets {
		dirs = append(dirs, golden.Path(t, "tiny-sd15", cn))
	}
	c, err := LoadDiffusers(dir, dirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// newTiny builds a pipeline on the tiny model with the 64×64 bucket warm.
func newTiny(t testing.TB, controlNets ...string) *Pipeline {
	t.Helper()
	p, err := New(openTiny(t, controlNets...), Options{Buckets: []Bucket{{Width: 64, Height: 64}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(golden.Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func goldenUint8s(t testing.TB, file, name string) []uint8 {
	t.Helper()
	f, err := safetensors.Open(golden.Path(t, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, info, err := f.Raw(name)
	if err != nil {
		t.Fatal(err)
	}
	if info.DType != safetensors.U8 {
		t.Fatalf("%s is %s, want U8", name, info.DType)
	}
	return append([]uint8(nil), raw...)
}

// e2eRequest is the golden pipeline call: embeddings and latents from
// e2e_ref, the 64×64 control map, 4 steps, guidance 7.5, scale 1.
func e2eRequest(t testing.TB, sched string) Request {
	t.Helper()
	pos, _ := golden.Float32s(t, e2eFile, "prompt_embeds")
	neg, _ := golden.Float32s(t, e2eFile, "negative_prompt_embeds")
	lat, _ := golden.Float32s(t, e2eFile, "latents_init")
	return Request{
		PromptEmbeds:         pos,
		NegativePromptEmbeds: neg,
		Controls:             []Control{{Image: readGolden(t, "e2e_control_64.png"), Scale: 1}},
		Width:                64,
		Height:               64,
		Steps:                4,
		GuidanceScale:        7.5,
		Scheduler:            sched,
		Latents:              lat,
	}
}

// checkGolden compares a generation with the reference tensors named
// <prefix>_* in file and logs every measured error.
func checkGolden(t *testing.T, p *Pipeline, req Request, file, prefix string) {
	t.Helper()
	var steps [][]float32
	req.OnStep = func(_ int, _ float64, latents []float32) {
		steps = append(steps, append([]float32(nil), latents...))
	}
	res, err := p.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	wantSteps, shape := golden.Float32s(t, file, prefix+"_latents_after_step")
	if len(steps) != shape[0] {
		t.Fatalf("%d steps reported, want %d", len(steps), shape[0])
	}
	per := len(wantSteps) / shape[0]
	for i, got := range steps {
		golden.AssertClose(t, fmt.Sprintf("%s latents after step %d", prefix, i), got, wantSteps[i*per:(i+1)*per], 1e-3)
	}
	want, _ := golden.Float32s(t, file, prefix+"_final_latents")
	golden.AssertClose(t, prefix+" final latents", res.Latents, want, 1e-3)
	want, _ = golden.Float32s(t, file, prefix+"_image")
	golden.AssertClose(t, prefix+" image", res.Decoded, want, 2.0/255)

	wantPix := goldenUint8s(t, file, prefix+"_image_uint8")
	if len(res.Pixels) != len(wantPix) {
		t.Fatalf("%d pixels, want %d", len(res.Pixels), len(wantPix))
	}
	maxDiff, differ := 0, 0
	for i := range wantPix {
		d := int(res.Pixels[i]) - int(wantPix[i])
		d = max(d, -d)
		maxDiff = max(maxDiff, d)
		if d != 0 {
			differ++
		}
	}
	if maxDiff > 2 {
		t.Errorf("%s uint8 image: max |diff| %d > 2", prefix, maxDiff)
	} else {
		t.Logf("%s uint8 image: max |diff| %d, %d of %d values differ", prefix, maxDiff, differ, len(wantPix))
	}

	// The encoded PNG holds exactly the pixels.
	if len(res.Images) != 1 || res.Grid != nil {
		t.Fatalf("%d images and grid %v, want 1 image and no grid", len(res.Images), res.Grid != nil)
	}
	img, err := png.Decode(bytes.NewReader(res.Images[0]))
	if err != nil {
		t.Fatal(err)
	}
	if got := rgbBytes(img); !bytes.Equal(got, res.Pixels) {
		t.Errorf("%s: decoded PNG differs from Result.Pixels", prefix)
	}
	t.Logf("%s timings: %+v", prefix, res.Timings)
	if tm := res.Timings; !(tm.Scheduler > 0 && tm.Scheduler < tm.Denoise) {
		t.Errorf("%s: scheduler time %v, denoise %v: want 0 < scheduler < denoise", prefix, tm.Scheduler, tm.Denoise)
	}
}

// rgbBytes packs an image as [h, w, 3] bytes.
func rgbBytes(img image.Image) []byte {
	b := img.Bounds()
	out := make([]byte, 0, 3*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return out
}

// TestGolden runs every end-to-end reference of e2e_ref and e2e_extra_ref
// through one warm pipeline (and a second one with two ControlNets).
func TestGolden(t *testing.T) {
	single := newTiny(t)
	control2 := readGolden(t, "e2e_control2_64.png")

	tests := []struct {
		name    string
		file    string
		prefix  string
		sched   string
		multi   bool
		prepare func(*Request)
	}{
		{name: "ddim", file: e2eFile, prefix: "ddim", sched: "ddim"},
		{name: "euler", file: e2eFile, prefix: "euler", sched: "euler"},
		{name: "ddim_from_prompts", file: e2eFile, prefix: "ddim", sched: "ddim", prepare: fromPrompts},
		{name: "euler_from_prompts", file: e2eFile, prefix: "euler", sched: "euler", prepare: fromPrompts},
		{name: "guess", file: extraFile, prefix: "guess", sched: "ddim", prepare: func(r *Request) { r.GuessMode = true }},
		{name: "window", file: extraFile, prefix: "window", sched: "ddim", prepare: func(r *Request) {
			r.Controls[0].GuidanceStart, r.Controls[0].GuidanceEnd, r.Controls[0].Scale = 0.25, 0.75, 0.8
		}},
		{name: "nocfg", file: extraFile, prefix: "nocfg", sched: "ddim", prepare: func(r *Request) { r.GuidanceScale = 1 }},
		{name: "seeded", file: extraFile, prefix: "seeded", sched: "ddim", prepare: func(r *Request) { r.Latents, r.Seed = nil, 31337 }},
		{name: "unipc", file: extraFile, prefix: "unipc", sched: "unipc"},
		{name: "dpmpp2m_karras", file: extraFile, prefix: "dpmpp2m_karras", sched: "dpmpp_2m_karras"},
		{name: "multi", file: extraFile, prefix: "multi", sched: "ddim", multi: true, prepare: func(r *Request) {
			r.Controls = append(r.Controls, Control{Image: control2, Scale: 0.5})
		}},
	}
	var multi *Pipeline
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := single
			if tt.multi {
				if multi == nil {
					multi = newTiny(t, "controlnet", "controlnet2")
				}
				p = multi
			}
			req := e2eRequest(t, tt.sched)
			if tt.prepare != nil {
				tt.prepare(&req)
			}
			checkGolden(t, p, req, tt.file, tt.prefix)
		})
	}
}

// fromPrompts replaces the reference embeddings by the prompts, so the
// tokenizer and text encoder run too.
func fromPrompts(r *Request) {
	r.PromptEmbeds, r.NegativePromptEmbeds = nil, nil
	r.Prompt, r.NegativePrompt = e2ePrompt, e2eNegative
}
