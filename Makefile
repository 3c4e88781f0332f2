# GOEXPERIMENT=simd turns on the Go backend's AVX-512/AVX2 matmul kernels;
# asyncpreemptoff=1 works around math.Exp crawling under that experiment
# (docs/ARCHITECTURE.md, "Lowerings"). Both builds work; this one is fast.
export GOEXPERIMENT := simd
export GODEBUG := asyncpreemptoff=1

GO ?= go
# Debian's torch, for the block comparison in bench-kernels.
TORCH_PYTHON ?= /usr/bin/python3
BIN := bin/controlfn

.PHONY: all build test vet fmt-check fuzz bench bench-kernels build-xla clean demo device-check image image-edge loadtest

all: build

build:
	$(GO) build -o $(BIN) ./cmd/controlfn

# The XLA/PJRT backend (GPU) needs cgo and is linked only with -tags xla.
build-xla:
	CGO_ENABLED=1 $(GO) build -tags xla -o bin/controlfn-xla ./cmd/controlfn

vet:
	$(GO) vet ./...
	$(GO) vet -tags xla ./kernels/nn/

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: vet fmt-check
	$(GO) test -count=1 -timeout 15m ./...

# A short run of every fuzz target (seeds always run as part of `test`).
FUZZTIME ?= 15s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 50x $$pkg || exit 1; \
	  done; \
	done

# Tiny-model step benchmark (go test -bench).
bench:
	$(GO) test -run XXX -bench TinyStep -benchtime 10x ./kernels/unet/

# Full-size SD1.5 ControlNet+UNet step at 256x256 and per-block timings
# against PyTorch CPU; rewrites its section of docs/BENCHMARKS.md.
bench-kernels: build
	@$(TORCH_PYTHON) -c 'import torch' 2>/dev/null || { apt-get update && apt-get install -y python3-torch; }
	./$(BIN) bench-kernels --python $(TORCH_PYTHON)

# The built-in demo: write the tiny random-weight model, compile it into a
# verified fp16 bundle, then generate an image from its control map. Random
# weights draw noise, not a picture: the demo shows the whole path working.
DEMO := out/demo
demo: build
	@test -d $(DEMO)/model || ./$(BIN) demo-model --out $(DEMO)/model
	./$(BIN) compile --model $(DEMO)/model --size 64x64 --out $(DEMO)/bundle --overwrite
	./$(BIN) generate --bundle $(DEMO)/bundle --prompt "a photo of a red cube on a wooden table" \
	  --negative-prompt "blurry, low quality" --control-image $(DEMO)/model/control.png \
	  --steps 8 --seed 42 --out $(DEMO)/image.png

# Load test: the tiny demo bundle as a Lambda function under the Runtime
# Interface Emulator, 5 cold starts then 50 warm requests; writes
# report.json, latency.png and summary.md into $(LOADTEST_OUT).
LOADTEST_OUT ?= out/loadtest
LOADTEST_FLAGS ?= --cold 5 --requests 50
RIE_VERSION ?= latest
loadtest: build
	@test -d $(DEMO)/model || ./$(BIN) demo-model --out $(DEMO)/model
	./$(BIN) compile --model $(DEMO)/model --size 64x64 --out $(DEMO)/bundle --overwrite
	@if [ -z "$$CONTROLFN_RIE" ] && ! command -v aws-lambda-rie >/dev/null && [ ! -x bin/aws-lambda-rie ]; then \
	  echo "installing aws-lambda-rie into bin/"; \
	  GOEXPERIMENT= GOBIN=$(CURDIR)/bin $(GO) install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION); \
	fi
	./$(BIN) loadtest --target rie --bundle $(DEMO)/bundle --mode cold,warm $(LOADTEST_FLAGS) --out $(LOADTEST_OUT)

# Container images (need a Docker engine; none runs on the dev/CI machines):
# the Lambda image with a bundle baked in, and the edge server image.
BUNDLE ?= out/demo/bundle
image:
	docker build -f infra/Dockerfile --build-arg BUNDLE_DIR=$(BUNDLE) -t controlfn:latest .
image-edge:
	docker build -f infra/Dockerfile --target edge -t controlfn-edge:latest .

# GPU check, run on the lent GPU machine (no Go there): see the script's
# header for what to build and carry first.
device-check:
	bash infra/device/check.sh

clean:
	rm -rf bin out
