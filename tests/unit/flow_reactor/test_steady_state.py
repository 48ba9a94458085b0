"""Steady-state detection on detector signals: never before the transit, never on a creep,
and on time for a real approach to a plateau."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flow_reactor.steady_state import SteadyStateCriteria, SteadyStateDetector


def _tanks_in_series_step(t, tau, n):
    """Step response of n stirred tanks in series (Erlang CDF), as a detector would see it."""
    if t <= 0:
        return 0.0
    x = n * t / tau
    term, total = 1.0, 1.0
    for k in range(1, n):
        term *= x / k
        total += term
    return 1.0 - math.exp(-x) * total


def _feed(det, signal, t_end, dt=0.5):
    t = 0.0
    while t <= t_end:
        if det.update(t, signal(t)):
            return t
        t += dt
    return None


CRIT = SteadyStateCriteria(min_wait_s=60.0, window_s=18.0, max_wait_s=480.0, rel_tol=0.01, abs_tol=0.002)


def test_flat_baseline_before_the_transit_is_never_steady():
    det = SteadyStateDetector(CRIT, t0_s=0.0)
    # a flat solvent baseline: flat, but the feed cannot have arrived yet
    assert _feed(det, lambda t: 0.0, 59.5) is None
    assert not det.steady


def test_detects_plateau_of_dispersed_front_on_time_and_not_early():
    tau, final = 60.0, 0.8
    signal = lambda t: final * _tanks_in_series_step(t, tau, 40)  # noqa: E731
    det = SteadyStateDetector(CRIT, t0_s=0.0)
    t_ss = _feed(det, signal, 480.0)
    assert t_ss is not None
    assert abs(det.steady_value - final) <= 0.01 * final  # not premature
    assert 1.2 * tau <= t_ss <= 3.0 * tau


def test_slow_creep_is_not_a_plateau():
    # rising 0.6 % per window: the spread is inside the tolerance, the trend is not
    det = SteadyStateDetector(SteadyStateCriteria(min_wait_s=10, window_s=20, max_wait_s=400, rel_tol=0.01,
                                                  abs_tol=0.0), t0_s=0.0)
    assert _feed(det, lambda t: 1.0 + 0.0003 * t, 300.0) is None


def test_noise_within_tolerance_is_steady_and_timeout_reported():
    rng = np.random.default_rng(0)
    det = SteadyStateDetector(CRIT, t0_s=100.0)
    t = 100.0
    while not det.steady and t < 700:
        det.update(t, 0.5 + rng.normal(0, 0.0005))
        t += 0.5
    assert det.steady and det.steady_at_s - 100.0 >= 60.0 + 18.0 * 0.9
    never = SteadyStateDetector(CRIT, t0_s=0.0)
    _feed(never, lambda t: math.sin(t / 5.0), 500.0)
    assert not never.steady and never.timed_out(481.0) and not never.timed_out(479.0)


def test_inconsistent_criteria_rejected():
    with pytest.raises(ValueError):
        SteadyStateCriteria(min_wait_s=100, window_s=10, max_wait_s=50)
