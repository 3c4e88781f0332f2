package compiler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/kernels/hlo"
	"github.com/controlfn/controlfn/kernels/nn"
)

// tracePrograms traces every program the function compiles for the
// bundle's buckets (text encoders, the fused ControlNet + UNet step with
// and without guidance, the VAE decoder) on the StableHLO export backend,
// reading shapes from the weight files already written into w, and stores
// each program's text under programs/. The function's own pipeline code
// does the tracing, so the stored programs are the ones it builds; and a
// config the kernels refuse fails the compile rather than the cold start.
//
// Weights stay fp16 in the programs (converted inside the graph), as they
// do on an XLA device. Programs with a clip skip are traced by the
// function when asked for.
func tracePrograms(w *artifacts.Writer, m *artifacts.Manifest, logf func(string, ...any)) ([]artifacts.Program, error) {
	comps, err := pipeline.LoadBundle(&artifacts.Bundle{Dir: w.Dir(), Manifest: m})
	if err != nil {
		return nil, err
	}
	defer comps.Close()
	t := &tracer{w: w, comps: comps, backend: hlo.New(), index: map[string]int{}, texts: map[string][]byte{}}
	for _, b := range m.Buckets {
		start := time.Now()
		n, err := t.bucket(b)
		if err != nil {
			return nil, err
		}
		logf("programs: bucket %s traced (%d programs) in %s", b, n, time.Since(start).Round(time.Millisecond))
	}
	return t.out, nil
}

// tracer collects the programs of every bucket, each stored once.
type tracer struct {
	w       *artifacts.Writer
	comps   *pipeline.Components
	backend *hlo.Backend
	out     []artifacts.Program
	index   map[string]int    // name → position in out
	texts   map[string][]byte // name → StableHLO
}

// bucket traces one bucket's programs and returns how many there are.
func (t *tracer) bucket(b artifacts.Bucket) (int, error) {
	p, err := pipeline.New(t.comps, pipeline.Options{
		Backend:   t.backend,
		Precision: nn.KeepStored,
		Buckets:   []pipeline.Bucket{{Width: b.Width, Height: b.Height, NumImages: b.Batch}},
		Limits:    pipeline.Limits{MaxImages: max(b.Batch, 1)},
	})
	if err != nil {
		return 0, fmt.Errorf("trace bucket %s: %w", b, err)
	}
	defer p.Close()
	progs := p.Programs()
	for _, prog := range progs {
		text, ok := prog.StableHLO()
		if !ok {
			return 0, fmt.Errorf("trace %s: the export backend returned no StableHLO", prog.Name())
		}
		if i, seen := t.index[prog.Name()]; seen {
			// A text encoder serves every bucket; it must trace the same.
			if !bytes.Equal(t.texts[prog.Name()], text) {
				return 0, fmt.Errorf("trace %s: program differs between buckets", prog.Name())
			}
			t.out[i].Buckets = append(t.out[i].Buckets, b)
			continue
		}
		path := artifacts.ProgramPath(prog.Name())
		if _, err := t.w.AddBytes(path, text); err != nil {
			return 0, err
		}
		sum := sha256.Sum256(text)
		t.index[prog.Name()] = len(t.out)
		t.texts[prog.Name()] = text
		t.out = append(t.out, artifacts.Program{Name: prog.Name(), Buckets: []artifacts.Bucket{b}, File: path, SHA256: hex.EncodeToString(sum[:])})
	}
	return len(progs), nil
}
