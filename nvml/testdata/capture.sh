#!/bin/sh
# capture.sh records what the agent sees on a real GPU machine, as test
# fixtures for nvml/fixture_test.go:
#
#   capture.sh DROVER_BINARY OUT_DIR
#
# writes OUT_DIR/real-<gpu>.inventory.json (drover agent inventory --json
# --telemetry: the inventory and one telemetry sample of every GPU) and
# OUT_DIR/real-<gpu>.nvidia-smi.txt (nvidia-smi -q, which the test checks the
# inventory against). Build the binary with cgo on the development machine
# (CGO_CFLAGS="-O2 -Wno-deprecated-declarations" go build -o bin/drover
# ./cmd/drover), run this on the GPU machine, and copy both files into
# nvml/testdata.
set -eu
bin=${1:?usage: capture.sh DROVER_BINARY OUT_DIR}
out=${2:?usage: capture.sh DROVER_BINARY OUT_DIR}
mkdir -p "$out"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z' | sed 's/--*/-/g; s/-$//')
base="$out/real-${gpu:-unknown}"
"$bin" agent inventory --json --telemetry >"$base.inventory.json"
nvidia-smi -q >"$base.nvidia-smi.txt"
"$bin" agent inventory --telemetry
echo "wrote $base.inventory.json and $base.nvidia-smi.txt"
