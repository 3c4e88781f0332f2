package main

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/controlfn/controlfn/function/schema"
	"github.com/controlfn/controlfn/function/server"
)

// lateGenerator lets the HTTP server start before the model has loaded:
// it answers with an error until set is called (the server's readiness
// gate keeps requests away until then anyway).
type lateGenerator struct {
	g atomic.Pointer[server.Generator]
}

func (l *lateGenerator) set(g server.Generator) { l.g.Store(&g) }

func (l *lateGenerator) Generate(ctx context.Context, req schema.Request) (*schema.Response, error) {
	g := l.g.Load()
	if g == nil {
		return nil, errors.New("model is still loading")
	}
	return (*g).Generate(ctx, req)
}

// close releases the model once set (after the server has stopped).
func (l *lateGenerator) close() {
	if g := l.g.Load(); g != nil {
		if c, ok := (*g).(interface{ Close() }); ok {
			c.Close()
		}
	}
}

func (l *lateGenerator) Info() schema.ModelInfo {
	if g := l.g.Load(); g != nil {
		return (*g).Info()
	}
	return schema.ModelInfo{}
}
