"""The fault tier: kill -9 each kind of process in the middle of a twin campaign.

Every fault tried is recorded in ``FAULTS`` and printed at the end of the run (the issue asks the
tier to say what it tried and what the lab survived)."""

from __future__ import annotations

from typing import Any

import pytest

from fault_log import FAULTS  # noqa: E402  (tests/ is on the path)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FAULTS:
        return
    tr = terminalreporter
    tr.section("faults tried (kill -9 in the middle of a campaign)")
    tr.write_line(f"{'process':<20} {'killed while':<38} {'back in':>8}  {'tasks failed+retried':>20}  survived")
    for f in FAULTS:
        back = f"{f['back_s']:.1f} s" if f.get("back_s") is not None else "never"
        tr.write_line(f"{f['process']:<20} {f['while']:<38} {back:>8}  {f.get('affected', 0):>20}  "
                      f"{'yes' if f.get('survived') else 'NO: ' + str(f.get('why', ''))}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
