"""Test-suite wide set-up.

Every pytest run claims its own ROS_DOMAIN_ID (0-101, held by an flock for the life of the run,
so parallel runs on one machine never see each other) and keeps DDS discovery on localhost.
This runs before any test imports rclpy, and child processes inherit it.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import tempfile

import pytest

_LOCK_DIR = pathlib.Path(tempfile.gettempdir()) / "aichemist-ros-domains"
_domain_lock = None


def _claim_domain() -> int:
    global _domain_lock
    _LOCK_DIR.mkdir(exist_ok=True)
    start = os.getpid() % 100
    for i in range(102):
        domain = (start + i) % 102
        f = open(_LOCK_DIR / f"{domain}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _domain_lock = f
        return domain
    raise RuntimeError(f"no free ROS_DOMAIN_ID in 0-101 (locks in {_LOCK_DIR})")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ROS_DOMAIN_ID"] = str(_claim_domain())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # as `aichemist up` runs the lab: a killed node leaves the graph in 8 s (config/dds/fastdds_lab.xml)
    from aichemist.launcher import LAB_DDS_PROFILE

    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LAB_DDS_PROFILE))
    os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run tests that need real lab hardware")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs lab hardware: run with --hardware on a lab machine")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return (f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')} "
            f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')}")
