"""Fixtures shared by the manipulation tests: the lab layout and one embedded planner per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def layout():
    from manipulation.layout import load_layout

    return load_layout()


@pytest.fixture(scope="module")
def planner():
    pytest.importorskip("pinocchio")
    from manipulation.planning import EmbeddedPlanner

    return EmbeddedPlanner()
