# GOEXPERIMENT=simd turns on the Go backend's AVX-512/AVX2 matmul kernels;
# asyncpreemptoff=1 works around math.Exp crawling under that experiment
# (see docs/ARCHITECTURE.md, "Lowering choices").
export GOEXPERIMENT := simd
export GODEBUG := asyncpreemptoff=1

GO ?= go

.PHONY: all build test vet fmt-check

all: build

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: vet fmt-check
	$(GO) test -count=1 -timeout 15m ./...
