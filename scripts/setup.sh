#!/usr/bin/env bash
# Set up everything lapmusic needs, idempotently: a second run reuses the environment.
#   scripts/setup.sh          the app (venv in .venv, package, FluidSynth when root, the offline Bach set)
#   scripts/setup.sh --test   also the test tools (pytest, Playwright, Debian's Chromium when root) and Ray
#                             (tests/test_ray.py runs sweeps and the app's jobs on a real local Ray)
# Environment:
#   LAPMUSIC_VENV         where the virtual environment lives (default .venv)
#   LAPMUSIC_TORCH_INDEX  pip index for the CPU build of torch on machines whose pip would otherwise pull
#                         the multi-GB CUDA build, e.g. https://download.pytorch.org/whl/cpu
#   LAPMUSIC_APT_WAIT     seconds to wait for another apt/dpkg (e.g. unattended-upgrades) to release the
#                         package-manager lock before giving up (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
if [ "${1:-}" = "--test" ]; then want_test=1; fi
venv="${LAPMUSIC_VENV:-.venv}"
python="${PYTHON:-python3}"
apt_wait="${LAPMUSIC_APT_WAIT:-600}"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- system packages (FluidSynth for audio, Chromium for the browser test) -------------------------
declare -A why=(
  [libfluidsynth3]="FluidSynth, renders generated samples to audio (else pretty_midi's sine waves)"
  [fluid-soundfont-gm]="the FluidR3_GM General MIDI soundfont FluidSynth plays them with"
  [chromium]="headless browser for the end-to-end test (tests/test_browser.py)"
  [chromium-driver]="its driver"
)
apt_packages=(libfluidsynth3 fluid-soundfont-gm)
ubuntu=0
if [ -r /etc/os-release ] && grep -q '^ID=ubuntu' /etc/os-release; then ubuntu=1; fi
if [ $want_test = 1 ]; then
  if [ $ubuntu = 1 ]; then
    # Ubuntu's chromium package only installs a stub that asks for the snap (no snapd in containers).
    say "Ubuntu: not installing the 'chromium' package (a snap stub); the browser test is skipped unless"
    say "/usr/bin/chromium is a real Chromium (see the README, 'Tests')"
  else
    apt_packages+=(chromium chromium-driver)
  fi
fi

# The inode numbers of the package-manager locks and the pids that hold a POSIX lock on them, read from
# /proc/locks (apt and dpkg use fcntl locks; no fuser/lsof needed).
lock_holders() {
  local file inode pids=""
  for file in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock; do
    [ -e "$file" ] || continue
    inode=$(stat -c %i "$file")
    pids+=" $(awk -v inode="$inode" '{ split($6, id, ":"); if (id[3] == inode) print $5 }' /proc/locks 2>/dev/null)"
  done
  echo $pids | tr ' ' '\n' | sort -u | tr '\n' ' '
}

describe_pids() {
  local pid
  for pid in $*; do
    printf '%s (%s)  ' "$pid" "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-80 || echo gone)"
  done
}

wait_for_package_manager() {
  local waited=0 holders
  holders=$(lock_holders)
  while [ -n "${holders// /}" ]; do
    if [ "$waited" -ge "$apt_wait" ]; then
      die "the package-manager lock is still held after ${apt_wait} s by: $(describe_pids $holders)
  It is usually unattended-upgrades on a fresh machine; it finishes by itself. Wait for it and run this
  again, or wait longer (LAPMUSIC_APT_WAIT=1800), or install by hand later: apt-get install ${missing[*]}"
    fi
    if [ $((waited % 30)) = 0 ]; then
      say "waiting for the package-manager lock (held by: $(describe_pids $holders)); ${waited}/${apt_wait} s"
    fi
    sleep 5
    waited=$((waited + 5))
    holders=$(lock_holders)
  done
  remaining=$((apt_wait - waited))
  [ "$remaining" -ge 60 ] || remaining=60
}

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian packages:"
    for pkg in "${missing[@]}"; do say "  $pkg: ${why[$pkg]}"; done
    wait_for_package_manager
    # apt waits on its own too (DPkg::Lock::Timeout) in case another apt starts in between.
    apt_options=(-o "DPkg::Lock::Timeout=$remaining" -qq)
    apt-get "${apt_options[@]}" update || die "apt-get update failed (see above); fix it or install by hand: apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed (see above)"
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
    say "GPU found: installing torch with CUDA (the network, LAE solver and training run on it)"
    "${pip[@]}" install "torch>=2.2"
  elif [ -n "${LAPMUSIC_TORCH_INDEX:-}" ]; then
    say "installing CPU torch from $LAPMUSIC_TORCH_INDEX (the network, LAE solver and training)"
    "${pip[@]}" install torch --index-url "$LAPMUSIC_TORCH_INDEX"
  else
    say "no GPU: installing the CPU build torch==2.13.0 (the network, LAE solver and training)"
    "${pip[@]}" install "torch==2.13.0"
  fi
fi

# The package itself (editable), reinstalled only when pyproject.toml changed.
extras="" stamp="$venv/.lapmusic-installed"
if [ $want_test = 1 ]; then
  extras="[test,ray]" stamp="$stamp-test"
fi
digest=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  test_tools=""
  if [ $want_test = 1 ]; then test_tools=", pytest + playwright + ruff + import-linter + mido + ray (tests)"; fi
  say "installing lapmusic$extras (editable) and its Python dependencies from pyproject.toml: numpy, scipy"
  say "  (maths), streamlit + plotly (the app), pretty_midi (MIDI), music21 (the offline Bach"
  say "  chorales), platformdirs (cache folder), pyfluidsynth (audio)$test_tools"
  "${pip[@]}" install -e ".$extras"
  echo "$digest" > "$stamp"
fi

# --- the offline Bach set, so that the app's first page never waits for its build --------------------
if [ $want_test = 0 ]; then
  if "$venv/bin/lapmusic" datasets --help 2>&1 | grep -q prepare; then
    say "preparing the offline Bach dataset (built from music21's corpus once, about a minute; cached)"
    "$venv/bin/lapmusic" datasets prepare bach \
      || die "building the Bach dataset failed (see above); the app would fail the same way on its first page"
  else
    say "this lapmusic has no 'datasets prepare': the app builds the Bach set on first use instead"
  fi
fi
say "ready: $venv"
