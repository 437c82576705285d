#!/usr/bin/env bash
# The full-data final comparison of docs/results.md on one GPU: Nottingham, MuseData and Piano-midi.de,
# LAE (the default recipe) and random init, seeds 11-13, all 18 runs at once (scripts/sweeps/gpu_final_*.json:
# 3 sweeps x 6 worker processes), each run stopped by early stopping or by its time budget (max_seconds).
# The CUDA tests run beside them. Meant to finish in under 9 minutes on a 16-core machine with one GPU.
#
#   scripts/gpu_final.sh                 results under $OUT (default ./gpu_final_out)
#
# Environment:
#   GPU_FINAL_DEVICE=cpu       rehearse on a machine without a GPU: tiny subsets, a few seconds per run
#   GPU_FINAL_SECONDS=S        time budget per run in seconds (default: the specs' max_seconds, 420)
#   GPU_FINAL_DATASETS="..."   which of nottingham musedata pianomidi (default all three)
#   GPU_FINAL_SPECS=NAME       the specs scripts/sweeps/NAME_DATASET.json (default gpu_final); also names the
#                              work folder /tmp/lapmusic-NAME and the folder NAME/ in the tarball
#   GPU_FINAL_JOBS=N           runs at once per sweep (default 6)
#   GPU_FINAL_TESTS=0          skip the CUDA tests (default 1: run them beside the sweeps)
#   GPU_FINAL_STOP=S           at S seconds into the script, cancel every run still training (its best model
#                              so far is kept; default: never)
#   GPU_FINAL_EVALUATE=1       `lapmusic evaluate --json` every run (a dataset as soon as its sweep ends) and
#                              write NAME_table.md and NAME_table.json under $OUT (scripts/evaluate_sweeps.py;
#                              default 0)
#   GPU_FINAL_END=S            the evaluations end at S seconds into the script (default 570)
#   GPU_FINAL_EVAL_JOBS=N      evaluations at once at the end (default 8; half as many per dataset before)
#   GPU_FINAL_PREFLIGHT=1      first train both inits of the first dataset on 4 pieces for 1 epoch and evaluate
#                              them; if that fails, stop at once (exit 3) so that a second try still fits (default 0)
#   PYTHON                     the interpreter (default python3)
#
# scripts/gpu_recipe.sh runs the music model's table (the NADE recipe, four datasets) through this script.
#
# Needs python3 with torch, numpy, scipy, pytest; pure-Python wheels in .whl/ are installed first
# (pip wheel --no-deps -w .whl pretty_midi mido six importlib_resources platformdirs). Data:
# $LAPMUSIC_DATA_DIR, else .data/ in the checkout (cp /path/to/datasets/*.mat .data/).
#
# What comes back under $OUT: machine.txt (GPU, load and nvidia-smi samples), cuda_tests.txt, sweeps.log,
# runs.tar.gz (every run folder and table without checkpoint.pt and the LAE files, under gpu_final/). If the
# command nears the call's limit, a watchdog packs what exists as runs_partial.tar.gz: best.pt and metrics.jsonl
# of an unfinished run still give its curves and, through `lapmusic evaluate`, its test figures.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python="${PYTHON:-python3}"
device="${GPU_FINAL_DEVICE:-cuda}"
out="${OUT:-$repo/gpu_final_out}"
mkdir -p "$out"
specs="${GPU_FINAL_SPECS:-gpu_final}"
work="/tmp/lapmusic-${specs//_/-}"
rm -rf "$work" && mkdir -p "$work/$specs"
started=$(date +%s)
say() { printf "[$specs %4ss] %s\n" "$(( $(date +%s) - started ))" "$*" | tee -a "$out/sweeps.log" >&2; }

if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .whl/*.whl || exit 2
  export PYTHONPATH="$work/site:$repo${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${LAPMUSIC_DATA_DIR:-}" ]; then export LAPMUSIC_DATA_DIR="$repo/.data"; fi
export LAPMUSIC_CACHE_DIR="$work/cache" LAPMUSIC_RUNS_DIR="$work/runs" OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

{
  date -u '+%Y-%m-%d %H:%M:%S UTC'
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $device"
  "$python" -c "import os, platform, torch; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count(), 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  ls -l "$LAPMUSIC_DATA_DIR"
} > "$out/machine.txt" 2>&1
if [ "$device" = cuda ] && ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "torch sees no GPU: GPU_FINAL_DEVICE=cpu rehearses on the CPU"; exit 2
fi

# Load and GPU use every 15 s, for the docs.
( while sleep 15; do
    echo "$(( $(date +%s) - started )) s: load $(cut -d' ' -f1-3 /proc/loadavg)" \
      "$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  done >> "$out/machine.txt" 2>&1 ) &
sampler=$!

extra=()
if [ "$device" = cpu ]; then extra=(device=cpu max_sequences=6 epochs=3); fi
[ -n "${GPU_FINAL_SECONDS:-}" ] && extra+=(max_seconds="$GPU_FINAL_SECONDS")
datasets=(${GPU_FINAL_DATASETS:-nottingham musedata pianomidi})

# Preflight: the whole path (sweep, LAE, training, final evaluation, lapmusic evaluate) on a few pieces, in
# about half a minute, before the long runs are started.
if [ "${GPU_FINAL_PREFLIGHT:-0}" = 1 ]; then
  say "preflight: ${datasets[0]}, both inits, 4 pieces, 1 epoch"
  if ! timeout 180 "$python" scripts/sweep.py --spec "scripts/sweeps/${specs}_${datasets[0]}.json" --jobs 2 --final \
         --out "$work/preflight" --name preflight --seeds 0 --retries 0 \
         --base ${extra[@]+"${extra[@]}"} max_sequences=4 epochs=1 > "$work/preflight.log" 2>&1 \
     || ! timeout 120 "$python" scripts/evaluate_sweeps.py "$work/preflight" --out "$work/preflight_table" \
         --jobs 2 >> "$work/preflight.log" 2>&1; then
    tail -n 60 "$work/preflight.log" >> "$out/sweeps.log"
    say "preflight FAILED (its log's end is in sweeps.log); nothing else was started"
    kill "$sampler" 2>/dev/null
    exit 3
  fi
  say "preflight passed"
fi

# Left out of the tarballs: the checkpoints to resume from and the LAEs (refitted from the data and settings), so
# that 24 run folders stay well under the 16 MiB a file that comes back may have.
leave_out=(--exclude checkpoint.pt --exclude '*.tmp*' --exclude '*.npz')

# Watchdog: pack what exists before the call's 600 s limit if the runs are not done by then.
# (Its own output goes nowhere: a killed watchdog's sleep must not hold the script's stdout open.)
( sleep $(( ${GPU_FINAL_WATCHDOG:-545} - ($(date +%s) - started) )); [ -f "$work/done" ] || {
    echo "watchdog: packing unfinished runs" >> "$out/sweeps.log"
    tar czf "$out/runs_partial.tar.gz" -C "$work" "${leave_out[@]}" "$specs"; } ) \
  </dev/null >/dev/null 2>&1 &
watchdog=$!

# At GPU_FINAL_STOP seconds, a cancel file in every unfinished run folder: each stops at its next batch.
if [ -n "${GPU_FINAL_STOP:-}" ]; then
  ( sleep $(( GPU_FINAL_STOP - ($(date +%s) - started) )); [ -f "$work/done" ] || {
      for run in "$work/$specs"/*/runs/*/; do [ -f "$run/final.json" ] || touch "$run/cancel"; done
      echo "stop: unfinished runs cancelled at ${GPU_FINAL_STOP} s" >> "$out/sweeps.log"; } ) \
    </dev/null >/dev/null 2>&1 &
  stopper=$!
fi

if [ "$device" = cuda ] && [ "${GPU_FINAL_TESTS:-1}" = 1 ]; then
  ( LAPMUSIC_TEST_DEVICE=cuda timeout 240 "$python" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py \
      > "$out/cuda_tests.txt" 2>&1; echo "exit $?" >> "$out/cuda_tests.txt" ) &
  tests=$!
fi

# One sweep per dataset; with GPU_FINAL_EVALUATE=1 a dataset whose runs are done is evaluated at once, while the
# others still train (half of GPU_FINAL_EVAL_JOBS at a time; the table at the end reuses these answers and evaluates what is left).
evaluate_until() {
  local left=$(( ${GPU_FINAL_END:-570} - ($(date +%s) - started) ))
  "$python" scripts/evaluate_sweeps.py "$@" --deadline "$(( left > 1 ? left : 1 ))"
}
alive() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
pids=()
for dataset in "${datasets[@]}"; do
  say "starting $dataset"
  ( "$python" scripts/sweep.py --spec "scripts/sweeps/${specs}_$dataset.json" --jobs "${GPU_FINAL_JOBS:-6}" --final \
      --out "$work/$specs/$dataset" --name final ${extra[@]+--base "${extra[@]}"} > "$work/$specs/$dataset.log" 2>&1
    echo $? > "$work/$dataset.status"
    if [ "${GPU_FINAL_EVALUATE:-0}" = 1 ]; then
      evaluate_until "$work/$specs/$dataset" --out "$work/early_$dataset" --jobs "$(( (${GPU_FINAL_EVAL_JOBS:-8} + 1) / 2 ))" \
        > /dev/null 2> "$work/early_$dataset.log"
    fi ) &
  pids+=($!)
done
until [ "$(cat "$work"/*.status 2>/dev/null | wc -l)" -ge "${#datasets[@]}" ] || ! alive; do sleep 2; done
status=0
for dataset in "${datasets[@]}"; do [ "$(cat "$work/$dataset.status" 2>/dev/null)" = 0 ] || status=1; done
touch "$work/done"
say "sweeps finished (status $status)"
cat "$work/$specs"/*.log >> "$out/sweeps.log"
kill "$watchdog" ${stopper:-} 2>/dev/null
tar czf "$out/runs.tar.gz" -C "$work" --warning=no-file-changed "${leave_out[@]}" "$specs"
say "packed $(du -h "$out/runs.tar.gz" | cut -f1) into $out/runs.tar.gz"
for pid in "${pids[@]}"; do wait "$pid"; done
[ -n "${tests:-}" ] && wait "$tests"
if [ "${GPU_FINAL_EVALUATE:-0}" = 1 ]; then
  cat "$work"/early_*.log >> "$out/sweeps.log"
  say "evaluating the runs not evaluated yet, until ${GPU_FINAL_END:-570} s; the table of all"
  evaluate_until "$work/$specs"/*/ --out "$out/${specs}_table" --jobs "${GPU_FINAL_EVAL_JOBS:-8}" \
    > /dev/null 2>> "$out/sweeps.log" || status=1
  say "wrote $out/${specs}_table.md and .json"
fi
kill "$sampler" 2>/dev/null
exit $status
