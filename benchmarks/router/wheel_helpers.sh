# Sourced by device_wheels.sh and benchmarks/kv-routing/device_bundle.sh (needs ROOT and PY):
# a package's pin from router/constraints.txt, and a download of cp312 manylinux wheels.
pin() { grep -i -E "^$1==" "$ROOT/router/constraints.txt" | head -1; }
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
        --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
