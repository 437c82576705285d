#!/usr/bin/env bash
# Set up everything lapmusic needs, idempotently: a second run reuses the environment.
#   scripts/setup.sh          the app (venv in .venv, package, FluidSynth when root)
#   scripts/setup.sh --test   also the test tools (pytest, Playwright, Debian's Chromium when root)
# Environment:
#   LAPMUSIC_VENV         where the virtual environment lives (default .venv)
#   LAPMUSIC_TORCH_INDEX  pip index for the CPU build of torch on machines whose pip would otherwise pull
#                         the multi-GB CUDA build, e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
if [ "${1:-}" = "--test" ]; then want_test=1; fi
venv="${LAPMUSIC_VENV:-.venv}"
python="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages (FluidSynth for audio, Chromium for the browser tests) -------------------------
apt_packages=(libfluidsynth3 fluid-soundfont-gm)
if [ $want_test = 1 ]; then apt_packages+=(chromium chromium-driver); fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "not root: install these by hand for audio/browser tests: sudo apt-get install ${missing[*]}"
    say "(without them audio falls back to pretty_midi's synthesis and browser tests are skipped)"
  fi
fi

# --- Python environment ------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# torch first: with no GPU take the CPU build (a bare 'torch' requirement pulls the CUDA build).
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    say "GPU found: installing torch with CUDA"
    "${pip[@]}" install "torch>=2.2"
  elif [ -n "${LAPMUSIC_TORCH_INDEX:-}" ]; then
    say "installing CPU torch from $LAPMUSIC_TORCH_INDEX"
    "${pip[@]}" install torch --index-url "$LAPMUSIC_TORCH_INDEX"
  else
    say "no GPU: installing the CPU build torch==2.13.0"
    "${pip[@]}" install "torch==2.13.0"
  fi
fi

# The package itself (editable), reinstalled only when pyproject.toml changed.
extras="" stamp="$venv/.lapmusic-installed"
if [ $want_test = 1 ]; then
  extras="[test]" stamp="$stamp-test"
fi
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  say "installing lapmusic$extras and its dependencies"
  "${pip[@]}" install -e ".$extras"
  echo "$digest" > "$stamp"
fi
say "ready: $venv"
