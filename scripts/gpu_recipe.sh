#!/usr/bin/env bash
# The music model's table on one GPU: the NADE sampling recipe (128 units, NADE 64 units on JSB and 150 on the
# others, 512-chord vocabulary, copy window 32, dropout 0.7, lr 3e-3, batch 8), LAE (the defaults of --init lae;
# input scale 4 on JSB and Nottingham)
# and random init, seeds 7-9, on MuseData with relative learning rates (a repeat of the CPU table's row;
# GPU_RECIPE_DATASETS adds JSB, Nottingham and Piano-midi.de, 6 worker processes each, all at once;
# scripts/sweeps/gpu_recipe_*.json) after a preflight (both inits of the first dataset on 4 pieces for 1 epoch, and
# their evaluation: a broken path ends the script within a minute or two, exit status 3, while a second try still
# fits the session), each stopped by early stopping (patience 6) or by its time budget (max_seconds 300 s of
# epochs); unfinished runs are cancelled at 470 s (best model kept); `lapmusic evaluate RUN --json` for every run
# (test NLL with each piece's first frame left out and scored), a dataset as soon as its sweep ends, until 570 s.
# No CUDA tests (the GPU's time goes to the runs). Meant to end in under 580 s (one 600 s call).
#
#   scripts/gpu_recipe.sh                results under $OUT (default ./gpu_recipe_out)
#
# Environment (each maps to scripts/gpu_final.sh's, which does the work; see its header):
#   GPU_RECIPE_DEVICE=cpu       rehearse without a GPU: 6 pieces per split, 3 epochs, a few seconds per run
#   GPU_RECIPE_DATASETS="..."   which of jsb nottingham musedata pianomidi (default musedata)
#   GPU_RECIPE_SECONDS=S        time budget per run in seconds (default: the specs' max_seconds, 300)
#   GPU_RECIPE_STOP=S           cancel unfinished runs at S seconds (default 470)
#   GPU_RECIPE_END=S            end the evaluations at S seconds (default 570)
#   GPU_RECIPE_JOBS=N           runs at once per dataset (default 6)
#   GPU_RECIPE_EVAL_JOBS=N      evaluations at once (default 8)
#
# What comes back under $OUT (6 files at most): machine.txt, sweeps.log, runs.tar.gz (every run folder with
# config.json, metrics.jsonl, final.json when it finished and best.pt, without checkpoint.pt, and each sweep's
# final.json table of its finished runs, under gpu_recipe/), runs_partial.tar.gz (only if the watchdog had to
# pack at 545 s), gpu_recipe_table.md and gpu_recipe_table.json (scripts/evaluate_sweeps.py: both conventions
# per run and per dataset and init, and whether the LAE start stays ahead at every epoch).
set -uo pipefail
export GPU_FINAL_SPECS=gpu_recipe GPU_FINAL_TESTS=0 GPU_FINAL_EVALUATE=1 GPU_FINAL_PREFLIGHT=1 \
  GPU_FINAL_DATASETS="${GPU_RECIPE_DATASETS:-musedata}" \
  GPU_FINAL_STOP="${GPU_RECIPE_STOP:-470}" GPU_FINAL_END="${GPU_RECIPE_END:-570}" \
  GPU_FINAL_JOBS="${GPU_RECIPE_JOBS:-6}" GPU_FINAL_EVAL_JOBS="${GPU_RECIPE_EVAL_JOBS:-8}" \
  GPU_FINAL_DEVICE="${GPU_RECIPE_DEVICE:-cuda}" OUT="${OUT:-$(cd "$(dirname "$0")/.." && pwd)/gpu_recipe_out}"
if [ -n "${GPU_RECIPE_SECONDS:-}" ]; then export GPU_FINAL_SECONDS="$GPU_RECIPE_SECONDS"; fi
exec "$(dirname "$0")/gpu_final.sh" "$@"
