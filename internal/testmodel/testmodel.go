// Package testmodel gives tests the warm function model over the golden
// tiny SD1.5 + ControlNet pipeline, the way the front ends (HTTP, Lambda)
// see it, so each front end's tests need not rebuild it.
package testmodel

import (
	"testing"

	"github.com/controlfn/controlfn/function/pipeline"
	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/service"
	"github.com/controlfn/controlfn/internal/golden"
)

// BuildID is the build id the tiny service reports.
const BuildID = "tiny-build"

// TinyService loads ../shared/golden/tiny-sd15 behind the service adapter,
// compiled for 64×64 single images; it is closed when the test ends.
func TinyService(t testing.TB) *service.Service {
	t.Helper()
	comps, err := pipeline.LoadDiffusers(golden.Path(t, "tiny-sd15"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { comps.Close() })
	p, err := pipeline.New(comps, pipeline.Options{Buckets: []pipeline.Bucket{{Width: 64, Height: 64, NumImages: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return service.New(p, schema.ModelInfo{BuildID: BuildID, Buckets: []schema.Size{{Width: 64, Height: 64}}, ControlNets: 1}, 0)
}
