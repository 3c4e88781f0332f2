package service

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/internal/memlimit"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute"
)

// LoadOptions configure a cold start.
type LoadOptions struct {
	// Backend runs the programs; nil creates the shipped Go backend.
	Backend compute.Backend
	// Verify is how much of the bundle is hashed before use (default:
	// every file, so a corrupt bundle never serves).
	Verify artifacts.VerifyMode
	// Precision: nn.KeepStored (weights stay fp16 on the device, converted
	// inside the graph: the front ends' default, measured as fast as fp32
	// on the Go backend with half the weight memory) or nn.Widen (fp32 on
	// the device). The zero value is nn.Widen.
	Precision nn.Precision
	// WarmUp runs one single-step generation per bucket so the first
	// request pays for nothing.
	WarmUp bool
	// ClipSkip the text encoder is built with.
	ClipSkip int
}

// ColdStart is the breakdown of loading a bundle.
type ColdStart struct {
	// Open is reading and verifying the bundle.
	Open time.Duration
	// Load is mapping weights, parsing configs and the tokenizer.
	Load time.Duration
	// Compile is tracing and compiling every bucket's programs, which
	// also uploads the weights to the backend.
	Compile time.Duration
	// WarmUp is the warm-up generations.
	WarmUp time.Duration
	Total  time.Duration
}

// LoadBundle is the function's cold start: open and verify a bundle, load
// its weights, compile every bucket's programs and warm them up.
func LoadBundle(dir string, opts LoadOptions) (_ *Service, cs ColdStart, err error) {
	t0 := time.Now()
	b, err := artifacts.Open(dir, artifacts.Options{Verify: opts.Verify})
	if err != nil {
		return nil, cs, err
	}
	cs.Open = time.Since(t0)
	t1 := time.Now()
	comps, err := pipeline.LoadBundle(b)
	if err != nil {
		return nil, cs, err
	}
	cs.Load = time.Since(t1)
	defer func() {
		if err != nil {
			comps.Close()
		}
	}()
	info := schema.ModelInfo{BuildID: b.Manifest.BuildID.String(), ControlNets: len(comps.ControlNets),
		ClipLayers: comps.TextEncoder.Config.NumHiddenLayers}
	var buckets []pipeline.Bucket
	for _, bk := range b.Manifest.Buckets {
		info.Buckets = append(info.Buckets, schema.Size{Width: bk.Width, Height: bk.Height})
		info.MaxImages = max(info.MaxImages, bk.Batch)
		buckets = append(buckets, pipeline.Bucket{Width: bk.Width, Height: bk.Height, NumImages: bk.Batch})
	}
	t2 := time.Now()
	p, err := pipeline.New(comps, pipeline.Options{Backend: opts.Backend, Precision: opts.Precision, ClipSkip: opts.ClipSkip,
		Buckets: buckets, FixedBuckets: true})
	if err != nil {
		return nil, cs, err
	}
	cs.Compile = time.Since(t2)
	// Every weight is on the backend now: drop the files' mapped pages
	// (~0.4 GiB of RSS on SD1.5 otherwise).
	comps.ReleaseMapped()
	// Hand the load-time garbage back to the OS and pace the collector on
	// the memory generations use above the weights: with GOGC alone a
	// generation piled up garbage and pooled buffers as large as the model
	// before the first collection (see internal/memlimit).
	svc := &Service{pipeline: p, info: info, clipSkip: opts.ClipSkip, components: comps,
		pacer: memlimit.Pace(0)}
	if opts.WarmUp {
		t3 := time.Now()
		if err := svc.warmUp(buckets); err != nil {
			svc.Close()
			return nil, cs, fmt.Errorf("warm-up: %w", err)
		}
		cs.WarmUp = time.Since(t3)
	}
	cs.Total = time.Since(t0)
	return svc, cs, nil
}

// warmUp runs one single-step generation per bucket, with and without
// guidance, on a blank control image.
func (s *Service) warmUp(buckets []pipeline.Bucket) error {
	for _, bk := range buckets {
		var buf bytes.Buffer
		if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, bk.Width, bk.Height))); err != nil {
			return err
		}
		controls := make([]pipeline.Control, s.info.ControlNets)
		for i := range controls {
			controls[i] = pipeline.Control{Image: buf.Bytes(), Scale: 1, GuidanceEnd: 1}
		}
		for _, g := range []float64{7.5, 1} {
			release := s.pacer.Reserve(s.pipeline.WorkingMemory(bk.Width, bk.Height, bk.NumImages))
			_, err := s.pipeline.Generate(context.Background(), pipeline.Request{
				Controls: controls, Width: bk.Width, Height: bk.Height, Steps: 1, GuidanceScale: g,
				Scheduler: "ddim", NumImages: bk.NumImages, Seed: 1,
			})
			release()
			if err != nil {
				return err
			}
		}
	}
	return nil
}
