"""Fixtures for the ros tier: real rclpy across processes.

- ``ros_probe``: an rclpy node in the test process, spinning in a MultiThreadedExecutor thread
  (on its own Context, shut down cleanly after the test).
- ``launch``: start a node manifest (launch/*.yaml) with the embedded launcher; every process is
  stopped after the test. The node output is kept and printed when a test fails.
The ROS_DOMAIN_ID of the run is set in tests/conftest.py.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any, Callable, Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ros


@pytest.fixture
def ros_probe() -> Iterator[Any]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_probe_{os.getpid()}", context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)

    def spin() -> None:
        # rclpy registers an ActionClient with the node before it has finished building it, so
        # an executor spinning meanwhile can trip over it (AttributeError '_lock'): report it
        # and keep spinning, or every later call of the test would time out.
        from rclpy.executors import ExternalShutdownException

        while context.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                return
            except Exception as exc:  # noqa: BLE001
                if context.ok():
                    print(f"ros_probe: exception in a callback (spinning on): {exc!r}")

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown()
        thread.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.fixture
def launch(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    from aichemist.launcher import Launcher

    started: list[Launcher] = []

    def _start(manifest: str | os.PathLike[str], args: dict[str, str] | None = None, **kwargs: Any) -> Launcher:
        path = pathlib.Path(manifest)
        if not path.is_absolute():
            path = REPO / path
        kwargs.setdefault("run_dir", tmp_path / f"run{len(started)}")
        kwargs.setdefault("out", None)
        launcher = Launcher(path, args, **kwargs).start()
        started.append(launcher)
        return launcher

    yield _start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for launcher in started:
        launcher.stop()
        if failed:
            for name in launcher._children:
                print(f"----- output of {name} -----")
                print("\n".join(launcher.output(name)[-80:]))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
