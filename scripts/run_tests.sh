#!/usr/bin/env bash
# The test suite, all tiers: unit (no ROS), ros (real rclpy across processes), twin (end to end).
# Extra arguments go to pytest (e.g. `./dev test tests/unit -k pump`).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYTHONUNBUFFERED=1
"$root/.venv/bin/python" -m pytest -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "run_tests: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit $rc
