package pipeline

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/imageproc"
	"github.com/gomlx/gomlx/core/tensors"
)

// sameResult reports whether two generations are bit-identical.
func sameResult(a, b *Result) bool {
	if !slices.Equal(a.Latents, b.Latents) || !slices.Equal(a.Decoded, b.Decoded) || len(a.Images) != len(b.Images) {
		return false
	}
	for i := range a.Images {
		if !bytes.Equal(a.Images[i], b.Images[i]) {
			return false
		}
	}
	return true
}

// TestRepeatAndCancel checks that generations leave no state behind: the
// same request gives bit-identical results run after run, after a
// cancelled run, after a timed-out one and when two calls queue.
func TestRepeatAndCancel(t *testing.T) {
	p := newTiny(t)
	for _, sched := range []string{"ddim", "euler_a"} {
		t.Run(sched, func(t *testing.T) {
			req := e2eRequest(t, sched)
			fromPrompts(&req)
			req.Latents, req.Seed = nil, 7 // euler_a also draws step noise from the seed
			ctx := context.Background()
			first, err := p.Generate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			second, err := p.Generate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if !sameResult(first, second) {
				t.Fatal("second generation differs from the first")
			}

			// Cancel from inside step 1: the loop stops before step 2.
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			cancelled := req
			var ran []int
			cancelled.OnStep = func(step int, _ float64, _ []float32) {
				ran = append(ran, step)
				if step == 1 {
					cancel()
				}
			}
			_, err = p.Generate(cctx, cancelled)
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled after 2 of 4 steps") {
				t.Fatalf("cancelled generation: err %v, want context.Canceled after 2 of 4 steps", err)
			}
			if !slices.Equal(ran, []int{0, 1}) {
				t.Errorf("steps run %v, want [0 1]", ran)
			}

			tctx, stop := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer stop()
			if _, err := p.Generate(tctx, req); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
				t.Fatalf("expired deadline: err %v, want a timeout wrapping context.DeadlineExceeded", err)
			}

			// Two calls at once queue on the pipeline and both match.
			var wg sync.WaitGroup
			results := make([]*Result, 2)
			errs := make([]error, 2)
			for i := range results {
				wg.Go(func() { results[i], errs[i] = p.Generate(ctx, req) })
			}
			wg.Wait()
			for i, r := range results {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if !sameResult(first, r) {
					t.Errorf("concurrent generation %d differs from the first", i)
				}
			}
		})
	}
}

// TestNumImages generates two rows in one batch: the row with the golden
// latents must still match the golden images, and the grid tiles both.
func TestNumImages(t *testing.T) {
	p := newTiny(t)
	req := e2eRequest(t, "ddim")
	other := make([]float32, len(req.Latents))
	for i, v := range req.Latents {
		other[i] = -v
	}
	req.Latents = append(slices.Clone(req.Latents), other...)
	req.NumImages = 2
	res, err := p.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Timings.Compile <= 0 {
		t.Errorf("compile time %v for a shape outside the buckets, want > 0", res.Timings.Compile)
	}
	row := len(res.Latents) / 2
	want, _ := golden.Float32s(t, e2eFile, "ddim_final_latents")
	golden.AssertClose(t, "row 0 final latents", res.Latents[:row], want, 1e-3)
	img := len(res.Decoded) / 2
	want, _ = golden.Float32s(t, e2eFile, "ddim_image")
	golden.AssertClose(t, "row 0 image", res.Decoded[:img], want, 2.0/255)
	if slices.Equal(res.Latents[:row], res.Latents[row:]) {
		t.Error("both rows have the same latents")
	}

	if len(res.Images) != 2 || res.Grid == nil {
		t.Fatalf("%d images, grid %v; want 2 images and a grid", len(res.Images), res.Grid != nil)
	}
	g, err := png.Decode(bytes.NewReader(res.Grid))
	if err != nil {
		t.Fatal(err)
	}
	if b := g.Bounds(); b.Dx() != 128 || b.Dy() != 64 {
		t.Fatalf("grid is %dx%d, want 128x64", b.Dx(), b.Dy())
	}
	for i, data := range res.Images {
		m, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for y := range 64 {
			for x := range 64 {
				if m.At(x, y) != g.At(64*i+x, y) {
					t.Fatalf("grid pixel (%d, %d) differs from image %d", 64*i+x, y, i)
				}
			}
		}
	}
}

// TestControlPrep checks the control inputs reach the step as diffusers
// prepares them: the golden preprocessed map, Canny from a photo, and the
// row order for several images with guidance.
func TestControlPrep(t *testing.T) {
	p := newUncompiled(t)
	want, _ := golden.Float32s(t, e2eFile, "control_image_preprocessed")
	photo := readGolden(t, "canny_photo2_input.png")
	edges := readGolden(t, "canny_photo2.png")
	fromEdges := prepared(t, p, Request{Width: 64, Height: 32, GuidanceScale: 1, Controls: []Control{{Image: edges}}})

	tests := []struct {
		name string
		req  Request
		want []float32
	}{
		{
			name: "golden map",
			req:  Request{Width: 64, Height: 64, GuidanceScale: 1, Controls: []Control{{Image: readGolden(t, "e2e_control_64.png")}}},
			want: want,
		},
		{
			name: "canny from photo",
			req:  Request{Width: 64, Height: 32, GuidanceScale: 1, Controls: []Control{{Image: photo, Canny: true, CannyLow: 100, CannyHigh: 200}}},
			want: fromEdges,
		},
		{
			// repeat_interleave per image, then cat([img] * 2).
			name: "two images with guidance",
			req:  Request{Width: 64, Height: 64, GuidanceScale: 7.5, NumImages: 2, Controls: []Control{{Tensor: want}}},
			want: slices.Concat(want, want, want, want),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := prepared(t, p, tt.req)
			if !slices.Equal(got, tt.want) {
				t.Errorf("prepared control differs (%d values, want %d)", len(got), len(tt.want))
			}
		})
	}
}

// newUncompiled is a tiny pipeline with no program compiled.
func newUncompiled(t testing.TB) *Pipeline {
	t.Helper()
	p, err := New(openTiny(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// prepared runs the control preparation of a request alone.
func prepared(t *testing.T, p *Pipeline, req Request) []float32 {
	t.Helper()
	req.Steps = 1
	g := &generation{p: p, ctx: context.Background(), res: &Result{}}
	if err := g.setup(req); err != nil {
		t.Fatal(err)
	}
	if err := g.prepareControls(); err != nil {
		t.Fatal(err)
	}
	flat, err := tensors.CopyFlatData[float32](g.images[0])
	if err != nil {
		t.Fatal(err)
	}
	return flat
}

// TestControlScales checks the per-row residual scales against diffusers'
// controlnet_keep and guess-mode rules.
func TestControlScales(t *testing.T) {
	p := &Pipeline{cnets: newUncompiled(t).cnets}
	skips := p.cnets[0].Config.NumSkips()
	ramp := func(s float32) []float32 {
		out := make([]float32, skips+1)
		for i := range out {
			out[i] = float32(math.Pow(10, -1+float64(i)/float64(skips))) * s
		}
		return out
	}
	uniform := func(s float32) []float32 {
		out := make([]float32, skips+1)
		for i := range out {
			out[i] = s
		}
		return out
	}
	zero := uniform(0)
	tests := []struct {
		name  string
		cfg   bool
		guess bool
		c     Control
		steps int
		// want[i] are the rows at step i: [uncond, cond] with guidance.
		want [][][]float32
	}{
		{
			name: "window", cfg: true, steps: 4,
			c: Control{Scale: 0.8, GuidanceStart: 0.25, GuidanceEnd: 0.75},
			want: [][][]float32{
				{zero, zero},
				{uniform(0.8), uniform(0.8)},
				{uniform(0.8), uniform(0.8)},
				{zero, zero},
			},
		},
		{
			// PNDM's five timesteps for four steps: keep uses len(timesteps).
			name: "window of five", cfg: false, steps: 5,
			c:    Control{Scale: 1, GuidanceStart: 0, GuidanceEnd: 0.5},
			want: [][][]float32{{uniform(1)}, {uniform(1)}, {zero}, {zero}, {zero}},
		},
		{
			name: "guess with guidance", cfg: true, guess: true, steps: 2,
			c:    Control{Scale: 0.5, GuidanceEnd: 1},
			want: [][][]float32{{zero, ramp(0.5)}, {zero, ramp(0.5)}},
		},
		{
			name: "guess without guidance", guess: true, steps: 1,
			c:    Control{Scale: 1, GuidanceEnd: 1},
			want: [][][]float32{{ramp(1)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &generation{p: p, cfg: tt.cfg, req: Request{NumImages: 1, GuessMode: tt.guess, Controls: []Control{tt.c}}}
			for i, want := range tt.want {
				got := g.controlScales(i, tt.steps)[0].Value().([][]float32)
				for row := range want {
					if !slices.Equal(got[row], want[row]) {
						t.Errorf("step %d row %d: scales %v, want %v", i, row, got[row], want[row])
					}
				}
			}
		})
	}
}

// TestClipSkip checks that clip_skip changes the prompt's embeddings and,
// as in diffusers, not the negative prompt's.
func TestClipSkip(t *testing.T) {
	p, err := New(openTiny(t), Options{ClipSkip: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	g := &generation{p: p, ctx: context.Background(), res: &Result{}}
	err = g.setup(Request{Prompt: e2ePrompt, NegativePrompt: e2eNegative, Width: 64, Height: 64, Steps: 1, GuidanceScale: 7.5,
		Controls: []Control{{Tensor: make([]float32, 3*64*64)}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.programs(); err != nil {
		t.Fatal(err)
	}
	if err := g.encodePrompts(); err != nil {
		t.Fatal(err)
	}
	got, err := tensors.CopyFlatData[float32](g.embeds)
	if err != nil {
		t.Fatal(err)
	}
	neg, _ := golden.Float32s(t, e2eFile, "negative_prompt_embeds")
	pos, _ := golden.Float32s(t, e2eFile, "prompt_embeds")
	golden.AssertClose(t, "negative prompt without clip skip", got[:len(neg)], neg, 1e-4)
	if diff, _ := golden.MaxAbsDiff(got[len(neg):], pos); diff < 1e-2 {
		t.Errorf("prompt with clip skip 1 is within %g of the last hidden state", diff)
	}
}

// TestValidation checks that impossible requests fail before any work,
// with a *RequestError naming the field.
func TestValidation(t *testing.T) {
	p := newUncompiled(t)
	good := func() Request {
		r := e2eRequest(t, "ddim")
		r.Controls = []Control{{Tensor: make([]float32, 3*64*64), Scale: 1}}
		return r
	}
	tests := []struct {
		name   string
		modify func(*Request)
		field  string
		is     error
	}{
		{"zero width", func(r *Request) { r.Width = 0 }, "width", nil},
		{"width not multiple of 8", func(r *Request) { r.Width = 60 }, "width", nil},
		{"height not multiple of 8", func(r *Request) { r.Height = 68 }, "height", nil},
		{"too many pixels", func(r *Request) { r.Width, r.Height = 4096, 4096 }, "width", nil},
		{"too many images", func(r *Request) { r.NumImages = 9 }, "num_images", nil},
		{"negative images", func(r *Request) { r.NumImages = -1 }, "num_images", nil},
		{"no steps", func(r *Request) { r.Steps = 0 }, "num_inference_steps", nil},
		{"too many steps", func(r *Request) { r.Steps = 1001 }, "num_inference_steps", nil},
		{"NaN guidance", func(r *Request) { r.GuidanceScale = math.NaN() }, "guidance_scale", errNaN},
		{"negative eta", func(r *Request) { r.Eta = -1 }, "eta", nil},
		{"unknown format", func(r *Request) { r.Format = "gif" }, "format", nil},
		{"bad quality", func(r *Request) { r.Format, r.Quality = JPEG, 101 }, "quality", nil},
		{"unknown scheduler", func(r *Request) { r.Scheduler = "lms" }, "scheduler", nil},
		{"no control", func(r *Request) { r.Controls = nil }, "control_image", nil},
		{"two controls for one ControlNet", func(r *Request) { r.Controls = append(r.Controls, r.Controls[0]) }, "control_image", nil},
		{"image and tensor", func(r *Request) { r.Controls[0].Image = []byte{1} }, "control_image", nil},
		{"neither image nor tensor", func(r *Request) { r.Controls[0].Tensor = nil }, "control_image", nil},
		{"canny on a tensor", func(r *Request) { r.Controls[0].Canny = true }, "control_type", nil},
		{"tensor of the wrong size", func(r *Request) { r.Controls[0].Tensor = make([]float32, 12) }, "control_image", nil},
		{"not an image", func(r *Request) { r.Controls[0] = Control{Image: []byte("GIF89a"), Scale: 1} }, "control_image", imageproc.ErrFormat},
		{"infinite scale", func(r *Request) { r.Controls[0].Scale = math.Inf(1) }, "controlnet_conditioning_scale", errNaN},
		{"negative start", func(r *Request) { r.Controls[0].GuidanceStart = -0.1 }, "control_guidance_start", nil},
		{"end above 1", func(r *Request) { r.Controls[0].GuidanceEnd = 1.5 }, "control_guidance_end", nil},
		{"start at end", func(r *Request) { r.Controls[0].GuidanceStart, r.Controls[0].GuidanceEnd = 0.5, 0.5 }, "control_guidance_start", nil},
		{"short prompt embeds", func(r *Request) { r.PromptEmbeds = r.PromptEmbeds[:10] }, "prompt_embeds", nil},
		{"short negative embeds", func(r *Request) { r.NegativePromptEmbeds = r.NegativePromptEmbeds[:10] }, "negative_prompt_embeds", nil},
		{"latents for two images", func(r *Request) { r.NumImages = 2 }, "latents", nil},
		{"NaN latents", func(r *Request) { r.Latents = slices.Clone(r.Latents); r.Latents[3] = float32(math.NaN()) }, "latents", errNaN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := good()
			tt.modify(&req)
			start := time.Now()
			_, err := p.Generate(context.Background(), req)
			var re *RequestError
			if !errors.As(err, &re) || re.Field != tt.field {
				t.Fatalf("err %v, want a RequestError for field %q", err, tt.field)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err %v does not wrap %v", err, tt.is)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("rejecting took %v: the request was not refused up front", d)
			}
		})
	}

	// A pipeline with fixed buckets refuses other sizes instead of
	// compiling for them.
	fixed, err := New(openTiny(t), Options{FixedBuckets: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Close()
	_, err = fixed.Generate(context.Background(), good())
	var re *RequestError
	if !errors.As(err, &re) || !errors.Is(err, errNotWarm) {
		t.Fatalf("unwarmed size under FixedBuckets: err %v, want a RequestError wrapping errNotWarm", err)
	}
}

// TestNewErrors checks that components that do not fit together are
// refused when the pipeline is built.
func TestNewErrors(t *testing.T) {
	none := func(*Components) {}
	tests := []struct {
		name   string
		modify func(c *Components)
		opts   Options
		want   string
	}{
		{"no tokenizer", func(c *Components) { c.Tokenizer = nil }, Options{}, "tokenizer"},
		{"no ControlNet", func(c *Components) { c.ControlNets = nil }, Options{}, "ControlNet"},
		{"no UNet weights", func(c *Components) { c.UNet.Weights = nil }, Options{}, "weights"},
		{"text width", func(c *Components) { c.TextEncoder.Config.HiddenSize = 64; c.TextEncoder.Config.IntermediateSize = 64 }, Options{}, "cross_attention_dim"},
		{"UNet as ControlNet", func(c *Components) { c.ControlNets[0].Config = c.UNet.Config }, Options{}, "UNet config"},
		{"bad scheduler config", func(c *Components) { c.SchedulerConfig = []byte("{") }, Options{}, "scheduler config"},
		{"clip skip", none, Options{ClipSkip: 5}, "clip skip"},
		{"bucket not a multiple of 8", none, Options{Buckets: []Bucket{{Width: 60, Height: 64}}}, "multiple of 8"},
		{"bucket over the image limit", none, Options{Buckets: []Bucket{{Width: 64, Height: 64, NumImages: 9}}}, "bucket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *openTiny(t)
			c.closers = nil
			tt.modify(&c)
			p, err := New(&c, tt.opts)
			if err == nil {
				p.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestLoadDiffusersErrors checks that an incomplete folder is refused with
// an error naming what is missing.
func TestLoadDiffusersErrors(t *testing.T) {
	src := golden.Path(t, "tiny-sd15")
	copyDir := func(t *testing.T, skip string) string {
		dst := t.TempDir()
		for _, sub := range []string{"text_encoder", "unet", "controlnet", "vae", "tokenizer", "scheduler"} {
			if err := os.MkdirAll(filepath.Join(dst, sub), 0o755); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(filepath.Join(src, sub))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				rel := filepath.Join(sub, e.Name())
				if rel == skip {
					continue
				}
				// Link rather than copy: the weights are megabytes.
				if err := os.Symlink(filepath.Join(src, rel), filepath.Join(dst, rel)); err != nil {
					t.Fatal(err)
				}
			}
		}
		return dst
	}
	tests := []struct {
		skip string
		want string
	}{
		{"unet/diffusion_pytorch_model.safetensors", "no weight file"},
		{"vae/config.json", "vae"},
		{"tokenizer/vocab.json", "vocab.json"},
		{"scheduler/scheduler_config.json", "scheduler"},
		{"controlnet/config.json", "controlnet"},
	}
	for _, tt := range tests {
		t.Run(tt.skip, func(t *testing.T) {
			c, err := LoadDiffusers(copyDir(t, tt.skip))
			if err == nil {
				c.Close()
				t.Fatal("LoadDiffusers succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want it to mention %q", err, tt.want)
			}
		})
	}
	t.Run("complete", func(t *testing.T) {
		c, err := LoadDiffusers(copyDir(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.ControlNets) != 1 {
			t.Errorf("%d ControlNets from the default controlnet/ folder, want 1", len(c.ControlNets))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
}

// TestWorkingMemory checks the working-memory estimate scales with pixels
// and images and is 0 for requests the pipeline refuses.
func TestWorkingMemory(t *testing.T) {
	p := newUncompiled(t)
	one := p.WorkingMemory(256, 256, 1)
	if one <= 0 {
		t.Fatalf("WorkingMemory(256, 256, 1) = %d", one)
	}
	if got := p.WorkingMemory(512, 512, 1); got != 4*one {
		t.Errorf("512×512: %d, want 4 × %d", got, one)
	}
	if got := p.WorkingMemory(256, 256, 2); got != 2*one {
		t.Errorf("2 images: %d, want 2 × %d", got, one)
	}
	if got := p.WorkingMemory(256, 256, 0); got != one {
		t.Errorf("0 images (means 1): %d, want %d", got, one)
	}
	for _, c := range [][3]int{{0, 256, 1}, {-256, -256, 1}, {1 << 30, 1 << 30, 1}, {256, 256, 1000}} {
		if got := p.WorkingMemory(c[0], c[1], c[2]); got != 0 {
			t.Errorf("WorkingMemory(%d, %d, %d) = %d, want 0", c[0], c[1], c[2], got)
		}
	}

	// Once a bucket is compiled, its programs' own estimates decide.
	warm := newTiny(t, "controlnet")
	var most int64
	for _, prog := range warm.Programs() {
		most = max(most, prog.TemporaryBytes())
	}
	if got := warm.WorkingMemory(64, 64, 1); most == 0 || got != most+most/4 {
		t.Errorf("compiled 64×64: %d, want 5/4 × %d (the largest program's temporaries)", got, most)
	}
}
