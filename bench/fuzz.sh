#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (libFuzzer through `cargo fuzz`), each for
# SECONDS (default 600), one after another, pinned to core 1 (taskset), and
# prints for each: executions, executions per second, coverage (edges and
# features), corpus size and findings. Crashes land in fuzz/artifacts/<target>/;
# each one fixed is kept as a regression test next to the code it broke.
#
# Usage: bench/fuzz.sh [SECONDS] [TARGET...]   (default: every target)
#
# cargo fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets this machine's one
# stable toolchain accept them. The sanitizer is off (`-s none`): the code
# fuzzed is safe Rust (unsafe_code = "forbid"), and without ASan the
# fuzzers run several times faster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds="${1:-600}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
printf '%-14s %12s %10s %8s %8s %8s %s\n' target execs execs/s cov ft corpus findings
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="$(mktemp)"
  taskset -c 1 cargo fuzz run -s none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo 0)
  corpus=$(find "corpus/$target" -type f | wc -l)
  findings=$(find "artifacts/$target" -type f | wc -l)
  printf '%-14s %12s %10s %8s %8s %8s %s\n' "$target" "$execs" "$rate" "$cov" "$ft" "$corpus" "$findings"
  if grep -q 'SUMMARY\|panicked\|deadly signal' "$log"; then
    grep -m3 -A3 'panicked\|SUMMARY\|deadly signal' "$log" | sed 's/^/    /'
  fi
  rm -f "$log"
done
