// Package service is the warm model of the function: a generation pipeline
// loaded once at cold start, exposed to the front ends (edge HTTP server,
// Lambda handler, CLI) as the server.Generator they all call. It translates
// the public request schema into a pipeline request and the pipeline's
// result into the public response.
package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/internal/memlimit"
)

// Service adapts a pipeline to server.Generator.
type Service struct {
	pipeline *pipeline.Pipeline
	info     schema.ModelInfo
	clipSkip int
	// components are closed with the service when it loaded them.
	components *pipeline.Components
	// pacer paces the collector above the weights LoadBundle loaded.
	pacer *memlimit.Pacer
}

// New wraps a pipeline. info describes what it serves (build id, buckets,
// ControlNet count); clipSkip is the clip skip its text encoder was built
// with (requests must ask for that one).
func New(p *pipeline.Pipeline, info schema.ModelInfo, clipSkip int) *Service {
	return &Service{pipeline: p, info: info, clipSkip: clipSkip}
}

// Info implements server.Generator.
func (s *Service) Info() schema.ModelInfo { return s.info }

// Close releases the pipeline's programs (and the bundle's mapped weights
// when the service loaded them).
func (s *Service) Close() {
	s.pacer.Stop()
	s.pipeline.Close()
	if s.components != nil {
		s.components.Close()
	}
}

// Generate implements server.Generator.
func (s *Service) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	preq, err := s.toPipeline(req)
	if err != nil {
		return nil, err
	}
	// Room above the weights for this generation (and the collector
	// paced on it) while it waits and runs.
	release := s.pacer.Reserve(s.pipeline.WorkingMemory(preq.Width, preq.Height, preq.NumImages))
	res, err := s.pipeline.Generate(ctx, preq)
	release()
	if err != nil {
		var re *pipeline.RequestError
		if errors.As(err, &re) {
			return nil, &schema.FieldError{Field: re.Field, Msg: re.Err.Error()}
		}
		return nil, err
	}
	return toResponse(res, s.info.BuildID), nil
}

func (s *Service) toPipeline(req schema.Request) (pipeline.Request, error) {
	if req.ClipSkip != s.clipSkip {
		return pipeline.Request{}, &schema.FieldError{Field: "clip_skip", Msg: fmt.Sprintf("this deployment serves clip_skip %d", s.clipSkip)}
	}
	out := pipeline.Request{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, GuessMode: req.GuessMode,
		Width: req.Width, Height: req.Height, Steps: req.Steps, GuidanceScale: req.GuidanceScale,
		Scheduler: req.Scheduler, NumImages: req.NumImages, Format: pipeline.Format(req.OutputFormat),
	}
	if req.Seed != nil {
		out.Seed = *req.Seed
	} else {
		out.Seed = schema.RandomSeed()
	}
	for i, img := range req.ControlImages {
		field := "control_images[" + fmt.Sprint(i) + "]"
		if img.Data == nil {
			// Object references are resolved by the event front ends
			// before a request reaches the model.
			return pipeline.Request{}, &schema.FieldError{Field: field, Msg: "object references are not resolved here"}
		}
		c := pipeline.Control{Image: img.Data, Scale: 1, GuidanceEnd: 1, CannyLow: req.CannyLow, CannyHigh: req.CannyHigh}
		if i < len(req.ControlType) {
			c.Canny = req.ControlType[i] == "canny"
		}
		if i < len(req.ConditioningScale) {
			c.Scale = req.ConditioningScale[i]
		}
		if i < len(req.GuidanceStart) {
			c.GuidanceStart = req.GuidanceStart[i]
		}
		if i < len(req.GuidanceEnd) {
			c.GuidanceEnd = req.GuidanceEnd[i]
		}
		out.Controls = append(out.Controls, c)
	}
	return out, nil
}

func toResponse(res *pipeline.Result, buildID string) *schema.Response {
	mime := schema.MIMEType(string(res.Format))
	resp := &schema.Response{
		BuildID: buildID, Seed: res.Seed, Steps: len(res.Timesteps),
		Width: res.Width, Height: res.Height, TimingsMS: schema.Timings{},
	}
	for _, img := range res.Images {
		resp.Images = append(resp.Images, schema.Image{MIME: mime, Data: img})
	}
	if res.Grid != nil {
		resp.Grid = &schema.Image{MIME: mime, Data: res.Grid}
	}
	t := res.Timings
	resp.TimingsMS.Add(schema.StageTokenize, t.Tokenize)
	resp.TimingsMS.Add(schema.StageTextEncode, t.TextEncode)
	resp.TimingsMS.Add(schema.StageControl, t.ControlPrep)
	resp.TimingsMS.Add(schema.StageDenoise, t.Denoise)
	resp.TimingsMS.Add(schema.StageScheduler, t.Scheduler)
	resp.TimingsMS.Add(schema.StageVAEDecode, t.VAEDecode)
	resp.TimingsMS.Add(schema.StageEncode, t.Encode)
	resp.TimingsMS.Add(schema.StageTotal, t.Total)
	if t.Compile > 0 {
		resp.TimingsMS.Add("compile", t.Compile)
	}
	if t.Queue > 0 {
		resp.TimingsMS.Add("queue", t.Queue)
	}
	return resp
}
