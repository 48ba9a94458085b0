"""The executor: runs a plan's steps through injected device adapters, resiliently.

    ex = Executor(adapters={"run_flow": ..., "measure": ...}, journal=StepJournal(path), clock=WallClock())
    results = ex.run(run_id, steps)          # {step id: result dict}

- Adapters are plain callables ``adapter(step, ctx) -> dict`` per step ``op`` (ROS action clients in
  the planner node; the twin's in-process devices in tests). ``ctx`` carries the clock, the step's
  deadline, a cancel event and ``ctx.sleep`` (which raises on cancel or timeout).
- Steps start when their dependencies have succeeded and their resources are free, in the
  scheduler's order (``planner.scheduler``), so independent work overlaps at run time as planned.
- Timeouts: a step not done by its ``timeout_s`` (on the executor's clock) fails with StepTimeout
  and its cancel event is set.
- Retries: errors that are ``retryable`` (aichemist.errors: communication timeouts, protocol
  errors, perception failures, step timeouts) are retried up to ``max_attempts`` with exponential
  backoff; a recovery action registered for the error's type (for example re-localise on a
  PerceptionError, re-grasp on a grasp failure) runs before the retry.
- Pause / resume / cancel: pause lets running steps finish and starts nothing new; resume goes on;
  cancel sets every running step's cancel event, starts nothing new and raises Cancelled. Nothing
  is lost: every state change is in the journal.
- Journal (SQLite, stdlib sqlite3): every run and every step's state, attempts, result and error.
  Running the same run id again resumes it: succeeded steps are not repeated (their results are
  reused); a step that was in flight when the planner stopped is failed cleanly ("in flight when
  the planner stopped"): its device state is unknown, so it is not blindly repeated.
- Document stream: subscribers get ``start`` (run id, steps), ``event`` (each step state change)
  and ``stop`` (exit status, reason) documents, in order, for recorders (ORD, MCAP, the bridge).
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from aichemist.clock import Clock, WallClock
from aichemist.errors import (AIChemistError, Cancelled, ConflictError, PlanningError, StepTimeout,
                              ValidationError)
from planner.compiler import Step
from planner.scheduler import schedule

Adapter = Callable[[Step, "StepContext"], dict]
Recovery = Callable[[Step, "StepContext", AIChemistError], None]
Subscriber = Callable[[dict], None]

IN_FLIGHT_MESSAGE = "in flight when the planner stopped; device state unknown, not repeated"


class StepInFlightLost(AIChemistError):
    """A step that was running when the planner process stopped."""

    code = StepTimeout.code


@dataclass
class StepContext:
    step: Step
    clock: Clock
    deadline: float
    attempt: int
    cancel: threading.Event
    emit: Callable[..., None]
    results: dict[str, dict] = field(default_factory=dict)  # results of finished steps (by id)
    transfer: Any = None  # a vial transfer's slots (planner.arbiter.Transfer), chosen when it started
    owner: str = ""       # the task the step belongs to (the arbiter's owner)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"step {self.step.id} cancelled")
        if self.clock.now() > self.deadline:
            raise StepTimeout(f"step {self.step.id} ({self.step.op}) exceeded its timeout "
                              f"{self.step.timeout_s:.0f} s", step=self.step.id)

    def sleep(self, seconds: float, poll_s: float = 1.0) -> None:
        """Wait on the executor's clock, raising Cancelled / StepTimeout as they happen."""
        end = self.clock.now() + seconds
        while True:
            self.check()
            left = end - self.clock.now()
            if left <= 0:
                return
            self.clock.sleep(min(left, poll_s))


# ---- journal -----------------------------------------------------------------------------
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, state TEXT NOT NULL, steps_json TEXT NOT NULL,
        started_at REAL NOT NULL, finished_at REAL, message TEXT)""",
    """CREATE TABLE IF NOT EXISTS steps (
        run_id TEXT NOT NULL, step_id TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        started_at REAL, finished_at REAL, result_json TEXT, error_type TEXT, message TEXT,
        PRIMARY KEY (run_id, step_id))""",
    """CREATE TABLE IF NOT EXISTS kv (
        scope TEXT NOT NULL, key TEXT NOT NULL, value_json TEXT NOT NULL, PRIMARY KEY (scope, key))""",
]

STEP_STATES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")


class StepJournal:
    """Persistent record of runs and steps (SQLite, WAL, synchronous writes)."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def _exec(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def open_run(self, run_id: str, steps: list[Step]) -> bool:
        """Create the run (True) or find it again to resume (False). A finished run is a conflict."""
        row = self._exec("SELECT state FROM runs WHERE run_id=?", (run_id,))
        if row:
            if row[0][0] in ("succeeded", "cancelled"):
                raise ConflictError(f"run {run_id} already {row[0][0]}; not run twice", run_id=run_id)
            self._exec("UPDATE runs SET state='running', finished_at=NULL, message=NULL WHERE run_id=?", (run_id,))
            return False
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO runs (run_id, state, steps_json, started_at) VALUES (?, 'running', ?, ?)",
                             (run_id, json.dumps([s.to_dict() for s in steps]), time.time()))
            self._db.executemany("INSERT INTO steps (run_id, step_id, state) VALUES (?, ?, 'pending')",
                                 [(run_id, s.id) for s in steps])
            self._db.execute("COMMIT")
        return True

    def fail_in_flight(self, run_id: Optional[str] = None) -> list[tuple[str, str]]:
        """Fail every step left 'running' by a stopped planner; returns (run id, step id)."""
        where, args = ("WHERE state='running'", ()) if run_id is None else ("WHERE state='running' AND run_id=?",
                                                                            (run_id,))
        rows = self._exec(f"SELECT run_id, step_id FROM steps {where}", args)
        self._exec(f"UPDATE steps SET state='failed', finished_at=?, error_type='StepInFlightLost', message=? {where}",
                   (time.time(), IN_FLIGHT_MESSAGE, *args))
        return [(r[0], r[1]) for r in rows]

    def set_step(self, run_id: str, step_id: str, state: str, *, attempts: Optional[int] = None,
                 result: Optional[dict] = None, error: Optional[BaseException] = None, message: str = "") -> None:
        assert state in STEP_STATES
        now = time.time()
        err_type = type(error).__name__ if error is not None else None
        msg = str(error) if error is not None else message
        if state == "running":
            self._exec("UPDATE steps SET state=?, started_at=?, attempts=COALESCE(?, attempts) "
                       "WHERE run_id=? AND step_id=?", (state, now, attempts, run_id, step_id))
        else:
            self._exec("UPDATE steps SET state=?, finished_at=?, attempts=COALESCE(?, attempts), result_json=?, "
                       "error_type=?, message=? WHERE run_id=? AND step_id=?",
                       (state, now, attempts, json.dumps(result) if result is not None else None, err_type, msg,
                        run_id, step_id))

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self._exec("SELECT step_id, state, attempts, result_json, error_type, message FROM steps "
                          "WHERE run_id=?", (run_id,))
        return {r[0]: {"state": r[1], "attempts": r[2], "result": json.loads(r[3]) if r[3] else None,
                       "error_type": r[4], "message": r[5]} for r in rows}

    def finish_run(self, run_id: str, state: str, message: str = "") -> None:
        self._exec("UPDATE runs SET state=?, finished_at=?, message=? WHERE run_id=?",
                   (state, time.time(), message, run_id))

    def run_state(self, run_id: str) -> Optional[str]:
        rows = self._exec("SELECT state FROM runs WHERE run_id=?", (run_id,))
        return rows[0][0] if rows else None

    def put(self, scope: str, key: str, value: Any) -> None:
        self._exec("INSERT OR REPLACE INTO kv (scope, key, value_json) VALUES (?, ?, ?)",
                   (scope, key, json.dumps(value)))

    def get_all(self, scope: str) -> dict[str, Any]:
        return {r[0]: json.loads(r[1]) for r in self._exec("SELECT key, value_json FROM kv WHERE scope=?", (scope,))}

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---- executor ----------------------------------------------------------------------------
@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 2.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        return min(self.backoff_s * self.backoff_factor ** (attempt - 1), self.max_backoff_s)


class Executor:
    def __init__(self, adapters: dict[str, Adapter], journal: StepJournal, *, clock: Clock | None = None,
                 retry: RetryPolicy | None = None, recoveries: dict[str, Recovery] | None = None,
                 capacities: dict[str, int] | None = None, poll_s: float = 0.05,
                 arbiter: Any = None, owner: str = "", priority: int = 0) -> None:
        from planner.arbiter import LabArbiter

        self.adapters = dict(adapters)
        self.journal = journal
        self.clock = clock or WallClock()
        self.retry = retry or RetryPolicy()
        self.recoveries = dict(recoveries or {})
        self.capacities = dict(capacities or {})
        self.poll_s = poll_s
        # shared with the other tasks' executors in the planner node; a private one otherwise
        self.arbiter = arbiter if arbiter is not None else LabArbiter(self.capacities)
        self.owner = owner
        self.priority = priority
        self.left_behind: list[str] = []
        self._subscribers: list[Subscriber] = []
        self._cond = threading.Condition()
        self._paused = False
        self._cancelled = False
        self._running_cancel: dict[str, threading.Event] = {}
        self._deadlines: dict[str, float] = {}
        self._timed_out: set[str] = set()

    # -- control (thread-safe; called from other threads, e.g. a ROS cancel callback) --------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        """Cancel the current run (or the next one, if none is running: an executor is per task)."""
        with self._cond:
            self._cancelled = True
            for event in self._running_cancel.values():
                event.set()
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def _emit(self, doc: dict) -> None:
        for sub in list(self._subscribers):
            try:
                sub(doc)
            except Exception:  # a broken recorder must not stop the lab
                pass

    # -- running -----------------------------------------------------------------------------
    def run(self, run_id: str, steps: list[Step], metadata: dict | None = None) -> dict[str, dict]:
        """Run (or resume) ``run_id``; returns every step's result. Raises the first failure's
        typed error (after running steps finish) or Cancelled."""
        missing = sorted({s.op for s in steps if s.op not in self.adapters and s.op != "wait"})
        if missing:
            raise ValidationError(f"no device adapter for step type(s) {missing}",
                                  problems=[{"field": "op", "value": m, "limit": sorted(self.adapters),
                                             "message": "no adapter"} for m in missing])
        order = {sid: n for n, sid in enumerate(schedule(steps, self.capacities).order())}
        if self._cancelled:  # cancelled before it started: nothing runs, nothing is recorded as run
            raise Cancelled(f"run {run_id} cancelled before it started", run_id=run_id)
        fresh = self.journal.open_run(run_id, steps)
        state = {sid: rec["state"] for sid, rec in self.journal.steps(run_id).items()}
        results = {sid: rec["result"] or {} for sid, rec in self.journal.steps(run_id).items()
                   if rec["state"] == "succeeded"}
        run_uid = str(uuid.uuid4())
        self._emit({"type": "start", "uid": run_uid, "run_id": run_id, "time": time.time(), "resumed": not fresh,
                    "steps": [s.to_dict() for s in steps], **({"metadata": metadata} if metadata else {})})
        first_error: Optional[AIChemistError] = None
        lost = self.journal.fail_in_flight(run_id) if not fresh else []
        for _, sid in lost:
            state[sid] = "failed"
            first_error = first_error or StepInFlightLost(f"step {sid} was {IN_FLIGHT_MESSAGE}", step=sid)
            self._emit({"type": "event", "run_uid": run_uid, "step_id": sid, "state": "failed",
                        "error_type": "StepInFlightLost", "message": IN_FLIGHT_MESSAGE, "time": time.time()})
        for sid, st in list(state.items()):  # earlier failures of a resumed run stay failures
            if st in ("failed", "cancelled") and first_error is None:
                rec = self.journal.steps(run_id)[sid]
                first_error = AIChemistError(f"step {sid} failed earlier: {rec['message']}")
        by_id = {s.id: s for s in steps}
        errors: dict[str, AIChemistError] = {}
        threads: list[threading.Thread] = []
        owner = self.owner or run_id

        def wake() -> None:
            with self._cond:
                self._cond.notify_all()

        unlisten = self.arbiter.listen(wake)
        waiting_told: set[str] = set()

        def worker(step: Step, cancel: threading.Event, transfer: Any) -> None:
            outcome: tuple[str, Any]
            try:
                outcome = ("succeeded", self._run_step(run_id, run_uid, step, cancel, results, transfer, owner))
            except AIChemistError as exc:
                outcome = ("cancelled" if isinstance(exc, Cancelled) else "failed", exc)

            except BaseException as exc:  # a bug in an adapter: typed, recorded, never a hung run
                outcome = ("failed", AIChemistError(f"step {step.id}: {type(exc).__name__}: {exc}"))
                self.journal.set_step(run_id, step.id, "failed", error=outcome[1])
            with self._cond:
                st, value = outcome
                state[step.id] = st
                if st == "succeeded":
                    results[step.id] = value
                else:
                    errors[step.id] = value
                self._running_cancel.pop(step.id, None)
            self.arbiter.finish(owner, step, transfer, succeeded=st == "succeeded")
            wake()

        def ready(s: Step) -> bool:  # dependencies met (resources are the arbiter's decision)
            return state[s.id] == "pending" and all(state.get(d) == "succeeded" for d in s.depends_on)

        with self._cond:
            while True:
                stop = self._cancelled or first_error is not None or bool(errors)
                if not stop and not self._paused:
                    for s in sorted((by_id[i] for i in state if state[i] == "pending"), key=lambda s: order[s.id]):
                        if not ready(s):
                            continue
                        started, transfer = self.arbiter.try_start(owner, self.priority, s)
                        if not started and s.id not in waiting_told:  # another task holds what it needs
                            waiting_told.add(s.id)
                            self._emit({"type": "event", "run_uid": run_uid, "step_id": s.id, "op": s.op,
                                        "state": "waiting", "resources": list(s.resources), "time": time.time()})
                        if started:
                            state[s.id] = "running"
                            cancel = threading.Event()
                            self._running_cancel[s.id] = cancel
                            t = threading.Thread(target=worker, args=(s, cancel, transfer), name=f"step-{s.id}",
                                                 daemon=True)
                            threads.append(t)
                            t.start()
                running = [i for i, st in state.items() if st == "running"]
                now = self.clock.now()
                for i in running:  # adapters that block without ctx.sleep: cancel them at the deadline
                    if now > self._deadlines.get(i, float("inf")) and i in self._running_cancel:
                        self._timed_out.add(i)
                        self._running_cancel[i].set()
                if not running:
                    if stop or not any(st == "pending" for st in state.values()):
                        break
                    if not self._paused and not any(ready(by_id[i]) for i in state if state[i] == "pending"):
                        # pending steps whose dependencies failed or were skipped
                        break
                self._cond.wait(self.poll_s)
        for t in threads:
            t.join()
        unlisten()
        self.left_behind = self.arbiter.forget(owner)  # vials the run leaves away from the rack
        for sid, st in state.items():
            if st == "pending":
                st2 = "cancelled" if self._cancelled else "skipped"
                state[sid] = st2
                self.journal.set_step(run_id, sid, st2, message="not started: "
                                      + ("run cancelled" if self._cancelled else "an earlier step failed"))
                self._emit({"type": "event", "run_uid": run_uid, "step_id": sid, "state": st2, "time": time.time()})
        # a step cancelled while the run was not (e.g. by its device) is a failure of the run
        failure = next((errors[s.id] for s in steps if s.id in errors
                        and (not isinstance(errors[s.id], Cancelled) or not self._cancelled)), None) or first_error
        if self._cancelled:
            exit_status, reason = "abort", "cancelled"
            self.journal.finish_run(run_id, "cancelled", reason)
        elif failure is not None:
            exit_status, reason = "fail", f"{failure.error_type}: {failure.message}"
            self.journal.finish_run(run_id, "failed", reason)
        else:
            exit_status, reason = "success", ""
            self.journal.finish_run(run_id, "succeeded")
        self._emit({"type": "stop", "run_uid": run_uid, "run_id": run_id, "time": time.time(),
                    "exit_status": exit_status, "reason": reason,
                    "num_events": {st: list(state.values()).count(st) for st in STEP_STATES}})
        if self._cancelled:
            raise Cancelled(f"run {run_id} cancelled", run_id=run_id)
        if failure is not None:
            raise failure
        return results

    def _run_step(self, run_id: str, run_uid: str, step: Step, cancel: threading.Event,
                  results: dict[str, dict], transfer: Any = None, owner: str = "") -> dict:
        attempt = 0
        while True:
            attempt += 1
            start = self.clock.now()
            deadline = start + (step.timeout_s or float("inf"))
            self._deadlines[step.id] = deadline

            def emit(**detail: Any) -> None:
                self._emit({"type": "event", "run_uid": run_uid, "step_id": step.id, "state": "progress",
                            "time": time.time(), **detail})

            ctx = StepContext(step, self.clock, deadline, attempt, cancel, emit, results, transfer, owner)
            self.journal.set_step(run_id, step.id, "running", attempts=attempt)
            self._emit({"type": "event", "run_uid": run_uid, "step_id": step.id, "op": step.op, "state": "running",
                        "attempt": attempt, "time": time.time(), "clock_s": start, "experiment": step.experiment,
                        "resources": list(step.resources),
                        **({"transfer": transfer.to_dict()} if transfer is not None else {})})
            try:
                if step.op == "wait":
                    ctx.sleep(float(step.params.get("duration_s", step.duration_s)))
                    result: dict = {}
                else:
                    result = self.adapters[step.op](step, ctx) or {}
                    if self.clock.now() > deadline:
                        raise StepTimeout(f"step {step.id} ({step.op}) exceeded its timeout {step.timeout_s:.0f} s",
                                          step=step.id)
                    if cancel.is_set():
                        raise Cancelled(f"step {step.id} cancelled")
            except AIChemistError as caught:
                exc = caught
                if (isinstance(exc, Cancelled) and not self._cancelled
                        and (step.id in self._timed_out or self.clock.now() > deadline)):
                    # cancelled by the executor at the deadline: that is a timeout (retryable)
                    self._timed_out.discard(step.id)
                    cancel.clear()
                    exc = StepTimeout(f"step {step.id} ({step.op}) exceeded its timeout {step.timeout_s:.0f} s",
                                      step=step.id)
                retry = (exc.retryable and not isinstance(exc, Cancelled) and not cancel.is_set()
                         and attempt < self.retry.max_attempts)
                self._emit({"type": "event", "run_uid": run_uid, "step_id": step.id, "op": step.op, "state":
                            "retrying" if retry else ("cancelled" if isinstance(exc, Cancelled) else "failed"),
                            "attempt": attempt, "error_type": exc.error_type, "message": exc.message,
                            "time": time.time(), "clock_s": self.clock.now(), "experiment": step.experiment,
                            "resources": list(step.resources)})
                if not retry:
                    self.journal.set_step(run_id, step.id, "cancelled" if isinstance(exc, Cancelled) else "failed",
                                          attempts=attempt, error=exc)
                    raise exc from None
                recovery = self._recovery_for(exc)
                backoff = self.retry.delay_s(attempt)
                # the expired deadline must not cancel the back-off (the retry gets a new one)
                self._deadlines[step.id] = float("inf")
                try:
                    StepContext(step, self.clock, float("inf"), attempt, cancel, emit, results).sleep(backoff)
                    if recovery is not None:
                        self._emit({"type": "event", "run_uid": run_uid, "step_id": step.id, "state": "recovering",
                                    "recovery": getattr(recovery, "__name__", "recovery"), "time": time.time()})
                        recovery(step, ctx, exc)
                except AIChemistError as rec_exc:
                    self.journal.set_step(run_id, step.id, "cancelled" if isinstance(rec_exc, Cancelled)
                                          else "failed", attempts=attempt, error=rec_exc)
                    raise
                continue
            self.journal.set_step(run_id, step.id, "succeeded", attempts=attempt, result=result)
            self._emit({"type": "event", "run_uid": run_uid, "step_id": step.id, "op": step.op, "state": "succeeded",
                        "attempt": attempt, "result": result, "time": time.time(), "clock_s": self.clock.now(),
                        "experiment": step.experiment, "resources": list(step.resources)})
            return result

    def _recovery_for(self, exc: AIChemistError) -> Optional[Recovery]:
        for cls in type(exc).__mro__:
            if cls.__name__ in self.recoveries:
                return self.recoveries[cls.__name__]
        return None


def steps_from_journal(journal: StepJournal, run_id: str) -> list[Step]:
    rows = journal._exec("SELECT steps_json FROM runs WHERE run_id=?", (run_id,))
    if not rows:
        raise PlanningError(f"no run {run_id} in the journal")
    return [Step(**d) for d in json.loads(rows[0][0])]


def iter_states(journal: StepJournal, run_id: str) -> Iterable[tuple[str, str]]:
    return ((sid, rec["state"]) for sid, rec in journal.steps(run_id).items())
