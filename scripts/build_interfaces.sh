#!/usr/bin/env bash
# Build the ament_cmake interface package into the venv with plain cmake (no colcon, no sourcing).
# Serialised with flock: several shells may call it at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${AICHEMIST_VENV:-$root/.venv}"
py="$venv/bin/python"
mkdir -p "$root/build"
exec 9>"$root/build/.interfaces.lock"
flock 9

# The ROS wheels' exported CMake files name the wheel build container's Python paths; point them
# at this interpreter (needed after every reinstall of the wheels).
"$py" - "$venv" <<'PY'
import glob, sys, sysconfig, numpy
venv = sys.argv[1]
subs = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}
for path in glob.glob(f"{venv}/share/*/cmake/*.cmake"):
    text = open(path).read()
    new = text
    for a, b in subs.items():
        new = new.replace(a, b)
    if new != text:
        open(path, "w").write(new)
PY

pkg="$root/ros2_ws/src/aichemist_interfaces"
build="$root/build/aichemist_interfaces"
mkdir -p "$build"
cmake -S "$pkg" -B "$build" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build/configure.log" 2>&1 \
  || { tail -40 "$build/configure.log"; exit 1; }
cmake --build "$build" -j2 >"$build/build.log" 2>&1 || { tail -60 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -20 "$build/install.log"; exit 1; }
echo "aichemist_interfaces built into $venv"
