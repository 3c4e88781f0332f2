// Package fakegen is a stand-in for the warm model in the Lambda front
// end's tests: a server.Generator that needs no bundle, returns
// deterministic images within milliseconds, honours cancellation between
// its "steps" like the real pipeline, and misbehaves on request so that a
// test driving a built bootstrap through payloads alone can reach the
// failure paths.
package fakegen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"time"

	"github.com/controlfn/controlfn/function/schema"
)

// Prompts that make Generate misbehave.
const (
	PromptFail  = "fakegen:fail"  // Generate returns an internal error
	PromptPanic = "fakegen:panic" // Generate panics
	PromptSlow  = "fakegen:slow"  // every step takes Options.SlowStep
)

// BuildID is the build id the fake bundle reports.
const BuildID = "00000000-0000-4000-8000-00000000fa6e"

// Options configure a Generator.
type Options struct {
	// StepDelay is the time every denoising step takes.
	StepDelay time.Duration
	// SlowStep is the step time of requests whose prompt is PromptSlow;
	// 0 means one second.
	SlowStep time.Duration
}

// Generator is the fake. It is safe for concurrent use.
type Generator struct {
	opts Options
}

// New returns a fake generator.
func New(opts Options) *Generator {
	if opts.SlowStep <= 0 {
		opts.SlowStep = time.Second
	}
	return &Generator{opts: opts}
}

// Info describes the fake bundle: one ControlNet, two small buckets, up
// to two images per request.
func (g *Generator) Info() schema.ModelInfo {
	return schema.ModelInfo{
		BuildID:     BuildID,
		Buckets:     []schema.Size{{Width: 64, Height: 64}, {Width: 96, Height: 64}},
		MaxImages:   2,
		ControlNets: 1,
	}
}

// Generate returns req.NumImages images of the requested size whose
// pixels depend only on the seed, so that tests can compare outputs.
func (g *Generator) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	start := time.Now()
	switch req.Prompt {
	case PromptFail:
		return nil, errors.New("fakegen: injected failure")
	case PromptPanic:
		panic("fakegen: injected panic")
	}
	for i, c := range req.ControlImages {
		if c.IsObject() {
			return nil, &schema.FieldError{Field: fmt.Sprintf("control_images[%d]", i), Msg: "object references are not resolved here"}
		}
		if _, _, err := image.Decode(bytes.NewReader(c.Data)); err != nil {
			return nil, &schema.FieldError{Field: fmt.Sprintf("control_images[%d]", i), Msg: "corrupt image: " + err.Error()}
		}
	}
	step := g.opts.StepDelay
	if req.Prompt == PromptSlow {
		step = g.opts.SlowStep
	}
	denoise := time.Now()
	for i := range req.Steps {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("fakegen: stopped before step %d of %d: %w", i+1, req.Steps, err)
		}
		if step > 0 {
			t := time.NewTimer(step)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("fakegen: stopped in step %d of %d: %w", i+1, req.Steps, ctx.Err())
			case <-t.C:
			}
		}
	}
	var seed uint64
	if req.Seed != nil {
		seed = *req.Seed
	}
	resp := &schema.Response{
		BuildID: BuildID, Seed: seed, Steps: req.Steps, Width: req.Width, Height: req.Height,
		TimingsMS: schema.Timings{},
	}
	resp.TimingsMS.Add(schema.StageDenoise, time.Since(denoise))
	mime := schema.MIMEType(req.OutputFormat)
	for i := range max(req.NumImages, 1) {
		data, err := encode(pattern(req.Width, req.Height, seed+uint64(i)), req.OutputFormat)
		if err != nil {
			return nil, err
		}
		resp.Images = append(resp.Images, schema.Image{MIME: mime, Data: data})
	}
	if len(resp.Images) > 1 {
		data, err := encode(pattern(req.Width*len(resp.Images), req.Height, seed), req.OutputFormat)
		if err != nil {
			return nil, err
		}
		resp.Grid = &schema.Image{MIME: mime, Data: data}
	}
	resp.TimingsMS.Add(schema.StageTotal, time.Since(start))
	return resp, nil
}

// pattern draws a gradient whose colours come from the seed.
func pattern(w, h int, seed uint64) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{
				R: uint8(seed) + uint8(x),
				G: uint8(seed>>8) + uint8(y),
				B: uint8(seed>>16) + uint8(x+y),
				A: 255,
			})
		}
	}
	return img
}

func encode(img image.Image, format string) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	if format == schema.FormatJPEG {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	} else {
		err = png.Encode(&buf, img)
	}
	if err != nil {
		return nil, fmt.Errorf("fakegen: encoding %s: %w", format, err)
	}
	return buf.Bytes(), nil
}
