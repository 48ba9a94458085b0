"""Fixtures for the twin tier: the whole lab (launch/twin.yaml) behind the bridge's HTTP API."""

from __future__ import annotations

import pathlib
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.twin


@pytest.fixture(scope="module")
def twin_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from aichemist.campaign import TwinLab

    run_dir = tmp_path_factory.mktemp("twin")
    lab = TwinLab(run_dir, extra_args={"real_time_factor": "60.0"}, devices=("flow_reactor", "hplc", "manipulator"))
    with lab:
        yield lab
    log = pathlib.Path(run_dir) / "lab.log"
    print(f"twin lab log: {log}")
