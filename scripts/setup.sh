#!/usr/bin/env bash
# Idempotent set-up of a fresh machine (Debian 12, Python 3.11): Debian packages, the .venv with
# pinned dependencies (ROS 2 Kilted wheels + rmw, torch CPU, ...), the interface package built
# with cmake into the venv, and the project installed editable. Each step is skipped when the
# inputs it depends on have not changed since it last succeeded, so a second run takes seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py="$venv/bin/python"
stamps="$venv/.aichemist-stamps"
say() { printf '[setup] %s\n' "$*" >&2; }

digest() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
fresh() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark() { mkdir -p "$stamps"; echo "$2" > "$stamps/$1"; }

# 1. Debian packages (rendering, SDF parser, chromium, libusb for open3d)
apt_list=$(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
apt_digest=$(echo "$apt_list" | sha256sum | cut -c1-16)
if ! fresh apt "$apt_digest"; then
  missing=()
  for p in $apt_list; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  [ -d "$venv" ] && mark apt "$apt_digest"
fi

# 2. the venv (the ROS wheels are cp311 builds)
if [ ! -x "$py" ]; then
  base_py=${AICHEMIST_PYTHON:-python3.11}
  command -v "$base_py" >/dev/null || base_py=python3
  "$base_py" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
    echo "[setup] Python 3.11 is required (the ROS 2 Kilted wheels are cp311); set AICHEMIST_PYTHON" >&2; exit 1; }
  say "creating $venv"
  "$base_py" -m venv "$venv"
  mark apt "$apt_digest"
fi

# 3. Python dependencies; torch first and exactly (any other spec pulls GBs of CUDA wheels)
req_digest=$(digest requirements/base.txt)
if ! fresh requirements "$req_digest"; then
  say "installing Python dependencies (first run: a few minutes)"
  pip_quiet() { "$py" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
  pip_quiet "torch==2.13.0"
  pip_quiet -r requirements/base.txt
  rm -f "$stamps/interfaces"  # reinstalled wheels bring their CMake paths back
  mark requirements "$req_digest"
fi

# 4. the interface package (cmake into the venv)
if_digest=$(cd ros2_ws/src/aichemist_interfaces && find . -type f | sort | xargs cat | sha256sum | cut -c1-16)
if ! fresh interfaces "$if_digest"; then
  say "building aichemist_interfaces"
  scripts/build_interfaces.sh >&2
  mark interfaces "$if_digest"
fi

# 5. the project, editable: core packages + CLI, and the ament_python packages
ed_digest=$(digest pyproject.toml ros2_ws/src/*/setup.py)
if ! fresh editable "$ed_digest"; then
  say "installing aichemist (editable)"
  "$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . \
    $(for p in ros2_ws/src/*/setup.py; do printf -- '-e %s ' "$(dirname "$p")"; done)
  mark editable "$ed_digest"
fi
