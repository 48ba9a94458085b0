"""SimClock: lock-step time that physics follows exactly."""

from __future__ import annotations

from aichemist.clock import SimClock


def test_sleep_steps_every_stepper_in_bounded_steps_and_advances_exactly():
    clock = SimClock(max_step=0.05)
    steps: list[tuple[float, float]] = []
    clock.add_stepper(lambda t, dt: steps.append((t, dt)))
    clock.sleep(0.12)
    assert [round(dt, 9) for _t, dt in steps] == [0.05, 0.05, 0.02]
    assert [round(t, 9) for t, _dt in steps] == [0.0, 0.05, 0.1]
    assert abs(clock.now() - 0.12) < 1e-12


def test_a_wait_loop_with_tiny_waits_reaches_its_deadline():
    clock = SimClock(start=1000.0)
    deadline = clock.now() + 1e-9
    for _ in range(100_000):
        if clock.now() >= deadline:
            break
        clock.sleep(1e-15)  # below the float resolution at t=1000: must still move time
    assert clock.now() >= deadline


def test_zero_or_negative_sleep_does_not_move_time():
    clock = SimClock(start=5.0)
    clock.sleep(0.0)
    clock.sleep(-1.0)
    assert clock.now() == 5.0
