#!/usr/bin/env bash
# Build llm-d's vLLM simulator (pure Go since v0.8.0) into <repo>/.tools/bin, once.
#
#   scripts/engines/install-llmd-sim.sh     # prints the binary's path when done
#
# The Go module and build caches are the ones scripts/install-tools.sh uses (<repo>/.tools/go),
# so modules and packages the tools share are downloaded and compiled once.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SIM_MODULE=github.com/llm-d/llm-d-inference-sim
SIM_VERSION=v0.10.2 # go directive 1.25.7: builds with the Go 1.26 toolchain, no cgo
BIN_DIR=$ROOT/.tools/bin
BIN=$BIN_DIR/llm-d-inference-sim
STAMP=$BIN_DIR/.llm-d-inference-sim.version

if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SIM_VERSION" ]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$BIN_DIR" "$ROOT/.tools/go"
exec 9>"$BIN_DIR/.llm-d-inference-sim.lock"
flock 9
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$SIM_VERSION" ]; then
    echo "$BIN"
    exit 0
fi

START=$(date +%s)
echo "Building $SIM_MODULE@$SIM_VERSION (once: downloads ~200 Go modules and compiles them, 3-15 min depending on load) ..." >&2
export GOPATH=$ROOT/.tools/go
export GOMODCACHE=$ROOT/.tools/go/pkg/mod
export GOCACHE=$ROOT/.tools/go/cache
export GOTOOLCHAIN=local
export GOFLAGS="-modcacherw -buildvcs=false" # -modcacherw lets `make clean` delete the cache
# `go install module@version` also asks the proxy for the module's version list (to report
# deprecations), which the proxy here refuses; download the exact version and build it in place.
SRC=$(go mod download -json "$SIM_MODULE@$SIM_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
(cd "$SRC" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN" ./cmd/llm-d-inference-sim)
echo "$SIM_VERSION" >"$STAMP"
echo "Built in $(($(date +%s) - START))s" >&2
echo "$BIN"
