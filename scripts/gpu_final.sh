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
#   PYTHON                     the interpreter (default python3)
#
# Needs python3 with torch, numpy, scipy, pytest; pure-Python wheels in .whl/ are installed first
# (pip wheel --no-deps -w .whl pretty_midi mido six importlib_resources platformdirs). Data:
# $LAPMUSIC_DATA_DIR, else .data/ in the checkout (cp /path/to/datasets/*.mat .data/).
#
# What comes back under $OUT: machine.txt (GPU, load and nvidia-smi samples), cuda_tests.txt, sweeps.log,
# runs.tar.gz (every run folder and table without checkpoint.pt, under gpu_final/). If the command nears the
# call's limit, a watchdog packs what exists as runs_partial.tar.gz: best.pt and metrics.jsonl of an
# unfinished run still give its curves and, through `lapmusic evaluate`, its test figures.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python="${PYTHON:-python3}"
device="${GPU_FINAL_DEVICE:-cuda}"
out="${OUT:-$repo/gpu_final_out}"
mkdir -p "$out"
work=/tmp/lapmusic-gpu-final
rm -rf "$work" && mkdir -p "$work/gpu_final"
started=$(date +%s)
say() { printf '[gpu_final %4ss] %s\n' "$(( $(date +%s) - started ))" "$*" | tee -a "$out/sweeps.log" >&2; }

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

# Watchdog: pack what exists before the call's 600 s limit if the runs are not done by then.
# (Its own output goes nowhere: a killed watchdog's sleep must not hold the script's stdout open.)
( sleep $(( ${GPU_FINAL_WATCHDOG:-545} - ($(date +%s) - started) )); [ -f "$work/done" ] || {
    echo "watchdog: packing unfinished runs" >> "$out/sweeps.log"
    tar czf "$out/runs_partial.tar.gz" -C "$work" --exclude checkpoint.pt --exclude '*.tmp*' gpu_final; } ) \
  </dev/null >/dev/null 2>&1 &
watchdog=$!

if [ "$device" = cuda ]; then
  ( LAPMUSIC_TEST_DEVICE=cuda timeout 240 "$python" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py \
      > "$out/cuda_tests.txt" 2>&1; echo "exit $?" >> "$out/cuda_tests.txt" ) &
  tests=$!
fi

extra=()
if [ "$device" = cpu ]; then extra=(device=cpu max_sequences=6 epochs=3); fi
[ -n "${GPU_FINAL_SECONDS:-}" ] && extra+=(max_seconds="$GPU_FINAL_SECONDS")
pids=()
for dataset in ${GPU_FINAL_DATASETS:-nottingham musedata pianomidi}; do
  say "starting $dataset"
  "$python" scripts/sweep.py --spec "scripts/sweeps/gpu_final_$dataset.json" --jobs 6 --final \
    --out "$work/gpu_final/$dataset" --name final ${extra[@]+--base "${extra[@]}"} \
    > "$work/gpu_final/$dataset.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
touch "$work/done"
say "sweeps finished (status $status)"
cat "$work"/gpu_final/*.log >> "$out/sweeps.log"
[ -n "${tests:-}" ] && wait "$tests"
kill "$sampler" "$watchdog" 2>/dev/null
tar czf "$out/runs.tar.gz" -C "$work" --exclude checkpoint.pt --exclude '*.tmp*' gpu_final
say "packed $(du -h "$out/runs.tar.gz" | cut -f1) into $out/runs.tar.gz"
exit $status
