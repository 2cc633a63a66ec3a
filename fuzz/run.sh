#!/usr/bin/env bash
# `make fuzz`: every target (or those named) on the nightly toolchain with cargo-fuzz, each
# until FUZZ_RUNS executions or FUZZ_SECONDS, whichever comes first; the corpus grows in
# corpus/<target>, a crash lands in artifacts/<target> (check it in: `make test` replays it).
# Prints each target's executions and exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")"
RUNS=${FUZZ_RUNS:-10000000}
SECS=${FUZZ_SECONDS:-1800}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
mkdir -p logs
cargo +nightly fuzz build -O >/dev/null
failed=0
printf '%-14s %12s %8s %s\n' target executions seconds result
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  start=$(date +%s)
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -runs="$RUNS" -max_total_time="$SECS" \
    -print_final_stats=1 -max_len=20000 >"logs/$t.log" 2>&1
  rc=$?
  execs=$(grep -o 'number_of_executed_units: [0-9]*' "logs/$t.log" | tail -1 | awk '{print $2}')
  result=ok
  if [ $rc -ne 0 ]; then result="CRASH (logs/$t.log, artifacts/$t)"; failed=1; fi
  printf '%-14s %12s %8s %s\n' "$t" "${execs:-?}" "$(( $(date +%s) - start ))" "$result"
done
exit $failed
