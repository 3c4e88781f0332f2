#!/usr/bin/env bash
# GPU check (make device-check), run ON the lent GPU machine from the repo root.
#
# The GPU machine has no Go toolchain: build the XLA binary here first
# (`make build-xla`, cgo) and send it with the working tree, together with a
# copy of the full-size SD1.5 configs inside the repo (an ignored folder named
# in the device tool's `carry`):
#
#   make build-xla && cp -r ../shared/sd15-configs out/sd15-configs
#   device: make device-check   (carry: bin, out/sd15-configs)
#
# It finds the jax-cuda13-pjrt plugin, builds the full-size random-weight
# SD1.5 + ControlNet bundle, and runs `controlfn bench --backend xla:cuda`
# at 512x512 x 20 steps with fp16 and fp32 weights on the device, printing
# per-step time, cold start (compile) and peak device memory. A second run
# measures the second cold start with XLA's kernel and autotune caches in
# the bundle's cache/ (bench --xla-cache), to set against the first fp16
# run's compile time. Fails fast without a GPU, plugin or binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin/controlfn-xla}
CONFIGS=${CONFIGS:-out/sd15-configs}
STEPS=${STEPS:-20}
SIZE=${SIZE:-512x512}
WORK=${WORK:-/tmp/controlfn-device}

fail() { echo "device-check: $*" >&2; exit 2; }

[ -x "$BIN" ] || fail "no $BIN: run 'make build-xla' on the dev machine and send bin/ along"
[ -f "$CONFIGS/unet/config.json" ] || fail "no SD1.5 configs at $CONFIGS (copy ../shared/sd15-configs there and carry it)"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA GPU here"
nvidia-smi -L | grep -q GPU || fail "nvidia-smi lists no GPU"

PY=${PYTHON:-python3}
PLUGIN=$($PY - <<'PY' 2>/dev/null || true
import os
try:
    import jax_plugins.xla_cuda13 as p
    print(os.path.join(os.path.dirname(p.__file__), "xla_cuda_plugin.so"))
except Exception:
    import site, glob
    for d in site.getsitepackages():
        for f in glob.glob(os.path.join(d, "**", "xla_cuda_plugin.so"), recursive=True):
            print(f); raise SystemExit
PY
)
[ -n "$PLUGIN" ] && [ -f "$PLUGIN" ] || fail "xla_cuda_plugin.so (jax-cuda13-pjrt) not found in $PY's site-packages"
SITE=$(cd "$(dirname "$PLUGIN")/../.." && pwd)   # .../site-packages
rm -rf "$WORK" && mkdir -p "$WORK/plugins/xla"
# go-xla loads plugins named pjrt_c_api_<name>_plugin.so and expects the
# pip nvidia-* libraries in ../nvidia relative to the plugin.
ln -s "$PLUGIN" "$WORK/plugins/xla/pjrt_c_api_cuda_plugin.so"
[ -d "$SITE/nvidia" ] && ln -s "$SITE/nvidia" "$WORK/plugins/nvidia"
export PJRT_PLUGIN_LIBRARY_PATH="$WORK/plugins/xla" GOMLX_NO_AUTO_INSTALL=1
LIBS=$(find "$SITE/nvidia" -maxdepth 2 -name lib -type d 2>/dev/null | paste -sd: -)
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== model and bundle"
t0=$(date +%s)
"$BIN" demo-model --configs "$CONFIGS" --out "$WORK/sd15" >/dev/null
"$BIN" compile --model "$WORK/sd15" --size "$SIZE" --out "$WORK/bundle" >/dev/null
echo "random-weight model + fp16 bundle: $(( $(date +%s) - t0 )) s"

# Peak device memory: sample nvidia-smi while the benchmark runs.
peak_file="$WORK/peak"
echo 0 >"$peak_file"
( while sleep 0.5; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [ "$m" -gt "$(cat "$peak_file")" ] && echo "$m" >"$peak_file"
  done ) & sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

echo "== programs the compiler exported (StableHLO)"
ls -la "$WORK/bundle/programs"

echo "== first cold start + $STEPS steps (fp32 and fp16 weights on the device; XLA caches empty)"
"$BIN" bench --backend "xla:cuda,preallocate=false" --xla-cache --bundle "$WORK/bundle" --size "$SIZE" --steps "$STEPS" \
  --title "### $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $SIZE, $STEPS DDIM steps, CFG"
echo "peak device memory (MiB, both runs): $(cat "$peak_file")"
echo "== XLA caches the first runs filled"
du -sh "$WORK/bundle/cache"/* 2>/dev/null || echo "(none)"
echo "== second cold start, same device, with XLA's kernel and autotune caches (compile+upload should drop)"
"$BIN" bench --backend "xla:cuda,preallocate=false" --xla-cache --bundle "$WORK/bundle" --size "$SIZE" --steps 1 --precision fp16
