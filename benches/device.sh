#!/usr/bin/env bash
# The device benchmark: on a machine with a GPU, builds, runs the kernel (bandwidth), GEMM,
# model (forward and convs), calibration, simulation and training benches with short sampling
# (QFORGE_BENCH_QUICK=1), and writes one summary (JSON and markdown) with the adapter, GB/s,
# GFLOP/s and images/s, as fractions of the copy bandwidth measured in the same run and of the
# adapter's FP32 peak where known. Meant to finish within 10 minutes.
#
#   benches/device.sh [out dir, default target/device-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/device-bench}"
mkdir -p "$out"
export QFORGE_BENCH_QUICK=1 QFORGE_BENCH_MOBILENET=1 XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
start=$(date +%s)

# One build of the library for the CLI, the benches and the summary example (the benches are
# a package of their own, so the CLI is named; the example runs as built, since `cargo run`
# without the benches' package would resolve other features and compile the library again).
cargo build --release -p qforge -p qforge-benches --bins --benches --examples 2>&1 | tail -n 3
./target/release/qforge devices | tee "$out/devices.txt"
adapter=$(grep '^\*' "$out/devices.txt" | head -n 1 | sed 's/^\* \[[0-9]*\] //')

rm -rf target/criterion
for bench in kernels gemm model calibration train adaround; do
  echo "== $bench ($(( $(date +%s) - start )) s)"
  # One bench that hangs or fails leaves the others' figures in the summary.
  timeout 240 cargo bench -p qforge-benches --bench "$bench" -- --noplot 2>&1 | tee "$out/$bench.log" | grep -E 'time:|thrpt:|^[a-z].*\[' || echo "$bench: failed or timed out (see $out/$bench.log)"
done

./target/release/examples/bench_summary target/criterion "$out" "$adapter"
echo "device benchmark: $(( $(date +%s) - start )) s, summary in $out/summary.md"
