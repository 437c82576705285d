#!/usr/bin/env bash
# One prepared run on a machine with an NVIDIA GPU: the CUDA tests, the suite parts that need no browser,
# the training-throughput and LAE benchmarks on CUDA and one short LAE-vs-random pair; every figure goes
# into one Markdown file. Meant to finish in under 5 minutes; every step has a time limit (555 s in all).
#
#   scripts/gpu_check.sh [REPORT.md]      default $OUT/gpu_check.md when $OUT is set, else ./gpu_check.md
#
# Needs only python3 with torch (CUDA build), numpy, scipy and pytest. The pure-Python packages lapmusic
# imports on these code paths travel as wheels in .whl/ (made on any machine with network access):
#   pip wheel --no-deps -w .whl pretty_midi mido six importlib_resources platformdirs packaging
# They are installed with pip --no-index --no-deps --target into a temporary folder put on PYTHONPATH.
# streamlit, plotly, music21, pyfluidsynth and playwright are not needed: the app, plot and browser tests
# are left out, and the audio tests fall back to pretty_midi's synthesis.
#
# Data: $LAPMUSIC_DATA_DIR, else .data/ or shared/datasets/ in the checkout when they hold
# JSB_Chorales.mat (cp /path/to/datasets/*.mat .data/), else random JSB-shaped pieces (labelled synthetic).
#
# Environment:
#   GPU_CHECK_DEVICE=cpu   rehearse everything on the CPU (a machine without a GPU), with small budgets
#   GPU_CHECK_SECONDS=N    measuring time per throughput setting (default 10; 3 with GPU_CHECK_DEVICE=cpu)
#   PYTHON                 the interpreter (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python="${PYTHON:-python3}"
device="${GPU_CHECK_DEVICE:-cuda}"
if [ -n "${1:-}" ]; then report="$1"; elif [ -n "${OUT:-}" ]; then report="$OUT/gpu_check.md"; else report="gpu_check.md"; fi
mkdir -p "$(dirname "$report")"
report="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
work=$(mktemp -d /tmp/lapmusic-gpu-check.XXXXXX)
log="$work/log"
started=$(date +%s)
failures=()

say() { printf '[gpu_check] %s\n' "$*" >&2; }
md() { printf '%s\n' "$*" >> "$report"; }

# --- carried wheels ---------------------------------------------------------------------------------
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  site="$work/site"
  if "$python" -m pip --version >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
  else  # no pip: a pure-Python wheel is a zip archive of the files to import
    for wheel in .whl/*.whl; do "$python" -m zipfile -e "$wheel" "$site"; done
  fi
  export PYTHONPATH="$site:$PYTHONPATH"
  say "installed $(ls .whl/*.whl | wc -l) carried wheels into $site"
fi
export LAPMUSIC_CACHE_DIR="$work/cache" LAPMUSIC_RUNS_DIR="$work/runs"

# --- what this machine is ---------------------------------------------------------------------------
missing=$("$python" - <<'EOF'
import importlib.util
need = ["torch", "numpy", "scipy", "pytest", "pretty_midi", "mido", "six", "importlib_resources", "platformdirs"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
) || { say "$python does not run"; exit 2; }
if [ -n "$missing" ]; then
  say "missing Python packages: $missing"
  say "make their wheels elsewhere (pip wheel --no-deps -w .whl $missing) and carry .whl/ here"
  exit 2
fi
if [ "$device" = cuda ] && ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "torch sees no CUDA GPU here; GPU_CHECK_DEVICE=cpu rehearses this script on the CPU"
  exit 2
fi
if [ "$device" = cpu ]; then seconds="${GPU_CHECK_SECONDS:-3}"; else seconds="${GPU_CHECK_SECONDS:-10}"; fi

data="${LAPMUSIC_DATA_DIR:-}"
for candidate in .data shared/datasets; do
  if [ -z "$data" ] && [ -f "$candidate/JSB_Chorales.mat" ]; then data="$repo/$candidate"; fi
done
if [ -n "$data" ] && [ -f "$data/JSB_Chorales.mat" ]; then
  export LAPMUSIC_DATA_DIR="$data"
  data_note="JSB Chorales (and Nottingham when present) from $data"
else
  unset LAPMUSIC_DATA_DIR
  data=""
  data_note="no benchmark data found: random JSB-shaped pieces (synthetic)"
fi

: > "$report"
md "# lapmusic GPU check"
md ""
md "Written by \`scripts/gpu_check.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device \`$device\`."
[ "$device" = cpu ] && md "**Rehearsal on the CPU (GPU_CHECK_DEVICE=cpu), small budgets: these are not GPU figures.**"
md ""
md '```'
"$python" - >> "$report" 2>&1 <<'EOF'
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu \
  --format=csv,noheader >> "$report" 2>&1
md "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
md "data: $data_note"
md '```'

# step TITLE LIMIT_SECONDS COMMAND...: runs it with a time limit, puts the command, its output (the last
# LINES lines, default 40) and its wall time into the report.
step() {
  local title="$1" limit="$2" lines="${LINES_SHOWN:-40}" t0 rc
  shift 2
  say "$title"
  t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$log" 2>&1
  rc=$?
  local wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  md ""
  md "## $title"
  md ""
  md "\`$*\` (exit $rc, ${wall} s wall, limit ${limit} s, load $(cut -d' ' -f1 /proc/loadavg))"
  md ""
  md '```'
  grep -v "is ignored: it is neither" "$log" | tail -n "$lines" >> "$report"
  md '```'
  if [ "$rc" != 0 ]; then failures+=("$title (exit $rc)"); fi
  return 0
}

# --- tests -------------------------------------------------------------------------------------------
LAPMUSIC_TEST_DEVICE="$device" step "CUDA tests (GPU against CPU)" 90 \
  "$python" -m pytest -q -p no:cacheprovider -m cuda -rs tests/test_cuda.py
# Everything else that needs no browser and no app framework (streamlit, plotly, music21 are absent).
# (audio: pyfluidsynth is absent, and audio has no GPU path; -k leaves out the Bach build, which needs
# music21; scripts/gpu_check_absent.py reports a test that imports streamlit, plotly or music21 as skipped)
no_browser=(--ignore=tests/test_browser.py --ignore=tests/test_app.py --ignore=tests/test_plots.py
            --ignore=tests/test_audio.py --ignore=tests/test_cuda.py -m "not browser" -k "not bach_build"
            -p gpu_check_absent -rs)
PYTHONPATH="$repo/scripts:$PYTHONPATH" LINES_SHOWN=40 step "Test suite without browser, app, plots and audio" 200 \
  "$python" -m pytest -q -p no:cacheprovider --durations=5 "${no_browser[@]}"

# --- benchmarks --------------------------------------------------------------------------------------
if [ -n "$data" ]; then train_data=(--dataset jsb); else train_data=(--synthetic); fi
[ "$device" = cpu ] && train_data+=(--max-pieces 60 --threads 1)
step "Training throughput: batch of one vs lapmusic's batches (benchmarks/bench_train.py)" 75 \
  "$python" benchmarks/bench_train.py "${train_data[@]}" --devices "$device" --seconds "$seconds" \
  --json-out "${report%.md}_bench_train.json"

lae_args=(--approx-only --device "$device" --jsb-subsets none)
if [ -n "$data" ] && [ -f "$data/Nottingham.mat" ] && [ "$device" = cuda ]; then
  lae_args+=(--datasets jsb,nottingham --hidden 64,256)
elif [ "$device" = cuda ]; then
  lae_args+=(--datasets jsb --hidden 64,256)
else
  lae_args+=(--datasets jsb --hidden 32)  # the rehearsal: one small case
fi
[ -z "$data" ] && lae_args+=(--synthetic)
[ "$device" = cpu ] && lae_args+=(--threads 1)
step "LAE approx solver (benchmarks/bench_lae.py)" 100 "$python" benchmarks/bench_lae.py "${lae_args[@]}" \
  --json "${report%.md}_bench_lae.json"

# --- one short LAE-vs-random pair ----------------------------------------------------------------------
if [ -n "$data" ]; then
  pair_dataset=jsb
else
  pair_dataset=user:synthetic
  "$python" - <<'EOF'
from benchmarks.bench_lae import synthetic_train
from lapmusic.data.dataset import Dataset
from lapmusic.data.user import save_user_dataset

pieces = synthetic_train(n=160)
save_user_dataset(Dataset("user:synthetic", "synthetic", pieces[:120], pieces[120:140], pieces[140:]))
EOF
fi
if [ "$device" = cpu ]; then pair=(--hidden 16 --epochs 1 --max-sequences 30); else pair=(--hidden 128 --epochs 5); fi
step "LAE vs random init, one seed (lapmusic compare)" 90 \
  "$python" -m lapmusic.cli compare --dataset "$pair_dataset" "${pair[@]}" --seeds 1 \
  --device "$device" --out "$work/compare"

# --- summary -----------------------------------------------------------------------------------------
md ""
md "## Summary"
md ""
md "Total ${SECONDS} s wall; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
if [ ${#failures[@]} -gt 0 ]; then
  md "Failed or timed out: ${failures[*]}"
else
  md "Every step finished."
fi
say "report: $report ($(( $(date +%s) - started )) s)"
rm -rf "$work"
[ ${#failures[@]} = 0 ]
