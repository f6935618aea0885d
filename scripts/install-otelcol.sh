#!/usr/bin/env bash
# Build the OpenTelemetry Collector that the tracing tests send spans to, once, into .tools/bin.
#
#   scripts/install-otelcol.sh        # prints the binary's path when done
#
# The collector is assembled with the collector builder (ocb) from the Go module proxy with only
# what the tests need: the OTLP receiver (gRPC and HTTP) and the file exporter, which writes every
# span it receives as OTLP JSON lines a test can read. ocb and the collector's modules are pinned
# below; the Go module and build caches are the ones scripts/install-tools.sh uses (.tools/go).
# Cold: ~1 min of downloads and a few minutes of compiling on 2 cores; later runs return at once.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/.tools
BIN_DIR=$TOOLS/bin
BIN=$BIN_DIR/otelcol-pdstack
STAMP=$BIN_DIR/.otelcol-pdstack.build

OCB_VERSION=v0.165.0            # go.opentelemetry.io/collector/cmd/builder
OTLP_RECEIVER_VERSION=v0.165.0  # go.opentelemetry.io/collector/receiver/otlpreceiver
FILE_EXPORTER_VERSION=v0.165.0  # opentelemetry-collector-contrib/exporter/fileexporter
PROVIDER_VERSION=v1.71.0        # confmap providers (file: and env: configuration sources)
WANT="ocb=$OCB_VERSION otlp=$OTLP_RECEIVER_VERSION file=$FILE_EXPORTER_VERSION providers=$PROVIDER_VERSION"

say() { printf 'install-otelcol: %s\n' "$*" >&2; }

built() { [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]; }

if built; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$BIN_DIR" "$TOOLS/go"
# Tests and `make test` may ask at the same time: one builder, the others wait for it.
exec 9>"$BIN_DIR/.otelcol-pdstack.lock"
flock 9
if built; then
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || { say "missing 'go' on PATH (the collector is built from the Go module proxy)"; exit 1; }
export GOPATH=$TOOLS/go
export GOMODCACHE=$TOOLS/go/pkg/mod
export GOCACHE=$TOOLS/go/cache
export GOTOOLCHAIN=local
export GOFLAGS="-modcacherw -buildvcs=false"
export CGO_ENABLED=0

START=$(date +%s)
WORK=$TOOLS/otelcol-build
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'say "build failed; its Go log:"; tail -20 "$WORK/go.log" >&2 2>/dev/null || true' ERR

# `go install module@version` asks the proxy for the module's version list, which the proxy here
# refuses: download the exact version of ocb and build it in place.
say "building the collector builder (ocb) $OCB_VERSION"
OCB_SRC=$(go mod download -json "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$OCB_SRC" ]] || { say "module download gave no directory for ocb"; exit 1; }
(cd "$OCB_SRC" && go build -trimpath -ldflags "-s -w" -o "$WORK/ocb" .)

cat >"$WORK/manifest.yaml" <<EOF
dist:
  name: otelcol-pdstack
  description: OpenTelemetry Collector for pdstack's tracing tests (OTLP in, OTLP JSON files out)
  output_path: $WORK/dist
  version: ${OCB_VERSION#v}
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTLP_RECEIVER_VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $FILE_EXPORTER_VERSION
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $PROVIDER_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $PROVIDER_VERSION
EOF

# ocb generates the collector's main package; the modules are resolved here rather than by ocb,
# whose `go mod tidy` also fetches the test-only dependencies of the file exporter, and one of
# them (otlpencodingextension) is not served by every module proxy: `tidy -e` records what the
# build needs and goes on; the build then fails only if the binary itself misses a module.
say "generating the collector's sources with ocb"
(cd "$WORK" && ./ocb --config manifest.yaml --skip-compilation --skip-get-modules >"$WORK/ocb.log" 2>&1) || {
    tail -40 "$WORK/ocb.log" >&2
    exit 1
}
say "resolving modules and compiling (once; a few minutes on 2 cores)"
cd "$WORK/dist"
go mod init pdstack.local/otelcol-pdstack 2>>"$WORK/go.log"
go get "go.opentelemetry.io/collector/otelcol@$OCB_VERSION" \
    "go.opentelemetry.io/collector/receiver/otlpreceiver@$OTLP_RECEIVER_VERSION" \
    "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter@$FILE_EXPORTER_VERSION" \
    "go.opentelemetry.io/collector/confmap/provider/fileprovider@$PROVIDER_VERSION" \
    "go.opentelemetry.io/collector/confmap/provider/envprovider@$PROVIDER_VERSION" 2>>"$WORK/go.log"
go mod tidy -e 2>>"$WORK/go.log" || true
go build -trimpath -ldflags "-s -w" -o otelcol-pdstack .
cd "$ROOT"
install -m 0755 "$WORK/dist/otelcol-pdstack" "$BIN"
"$BIN" --version >&2
echo "$WANT" >"$STAMP"
rm -rf "$WORK"
say "built in $(($(date +%s) - START))s"
echo "$BIN"
