"""Run any task end to end: compile, schedule, execute, close the optimisation loop.

    result = run_task(task_id, task_json, lab, executor)     # {"kind", "experiments": [...], ...}

- flow_experiment / procedure: compile (every check first), then one executor run ``task_id``.
- campaign: rounds of ``batch_size``: the optimizer (planner.optimizer) proposes conditions, the
  experiments are compiled (each checked against the lab), scheduled and run as executor run
  ``<task_id>/round<n>``, and their outcomes told back, until the budget is spent. Every
  experiment's conditions and outcome go into the journal, so a restarted planner rebuilds the
  optimizer from them and resumes at the next round; a round that was in flight has its in-flight
  steps failed cleanly and its unfinished experiments told as failed (missing outcome).

The result's ``experiments`` list follows the interface of ``/planner/execute_task``: conditions,
``yield_fraction``, ``sty_kg_m3_h``, ``e_factor`` and whatever else the devices reported.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from aichemist.errors import AIChemistError, Cancelled, ValidationError
from planner.compiler import Plan, compile_task, experiment_steps, link_experiments
from planner.executor import Executor
from planner.lab import LabProfile
from planner.optimizer import Optimizer
from planner.tasks import CampaignTask, FlowConditions, OUTCOME_NAMES, limit_problems, parse_task

Progress = Callable[[str, float, dict], None]


def experiment_outcomes(plan_steps: list[Any], results: dict[str, dict]) -> dict[int, dict[str, Any]]:
    """Merge each experiment's step results (flow run, then the HPLC measurement over it)."""
    out: dict[int, dict[str, Any]] = {}
    for s in plan_steps:
        if s.experiment is None or s.id not in results:
            continue
        rec = out.setdefault(s.experiment, {})
        if s.op == "run_flow":
            rec.update({k: v for k, v in results[s.id].items()})
        elif s.op == "measure":
            measured = results[s.id]
            rec["hplc"] = measured
            if measured.get("yield_fraction") is not None:
                rec["yield_fraction"] = measured["yield_fraction"]
    return out


def _run_plan(run_id: str, plan: Plan, executor: Executor, metadata: dict) -> tuple[dict[str, dict], Optional[AIChemistError]]:
    try:
        return executor.run(run_id, plan.steps, metadata=metadata), None
    except Cancelled:
        raise
    except AIChemistError as exc:
        steps = executor.journal.steps(run_id)
        return {sid: rec["result"] or {} for sid, rec in steps.items() if rec["state"] == "succeeded"}, exc


def run_task(task_id: str, task: Any, lab: LabProfile, executor: Executor, *,
             progress: Optional[Progress] = None, optimizer_options: Optional[dict] = None) -> dict[str, Any]:
    """Compile and run ``task``; raises the typed error of a failed step (the journal keeps the
    partial results) or ValidationError before anything runs."""
    if isinstance(task, (str, bytes)):
        task = json.loads(task)
    if isinstance(task, dict):
        task = parse_task(task)
    plan = compile_task(task, lab)
    report = progress or (lambda phase, frac, detail: None)
    metadata = {"task_id": task_id, "kind": task.kind, "proposed_by": getattr(task, "proposed_by", ""),
                "task": task.model_dump(mode="json")}
    if isinstance(task, CampaignTask):
        return _run_campaign(task_id, task, plan, lab, executor, report, metadata, optimizer_options or {})
    report("running", 0.0, {"steps": len(plan.steps)})
    results, error = _run_plan(task_id, plan, executor, metadata)
    if error is not None:
        raise error
    outcomes = experiment_outcomes(plan.steps, results)
    experiments = []
    for k, cond in enumerate(plan.experiments):
        experiments.append({"conditions": cond, "proposed_by": metadata["proposed_by"], **outcomes.get(k, {})})
    report("done", 1.0, {})
    return {"kind": task.kind, "task_id": task_id, "proposed_by": metadata["proposed_by"],
            "experiments": experiments, "steps": {sid: r for sid, r in results.items()}}


def _campaign_conditions(task: CampaignTask, proposal: dict[str, Any]) -> FlowConditions:
    return FlowConditions(**{**task.fixed, **proposal})


def _satisfies(task: CampaignTask, proposal: dict[str, Any]) -> bool:
    return all(sum(c * proposal[n] for n, c in con.coefficients.items()) <= con.bound + 1e-9
               for con in task.constraints)


def _run_campaign(task_id: str, task: CampaignTask, plan: Plan, lab: LabProfile, executor: Executor,
                  report: Progress, metadata: dict, optimizer_options: dict) -> dict[str, Any]:
    journal = executor.journal
    scope = f"campaign:{task_id}"
    optimizer = Optimizer([v.model_dump() for v in task.variables], [o.model_dump() for o in task.objectives],
                          seed=task.seed, constraints=[c.model_dump() for c in task.constraints],
                          **optimizer_options)
    done: dict[str, Any] = journal.get_all(scope)  # "e<k>" -> experiment record (resume)
    experiments: list[dict[str, Any]] = [done[k] for k in sorted(done, key=lambda k: int(k[1:]))]
    if experiments:
        optimizer.tell([e["proposal"] for e in experiments],
                       [{o.name: e.get(o.name) for o in task.objectives} for e in experiments])
    rounds = (task.budget + task.batch_size - 1) // task.batch_size
    start_round = len(experiments) // task.batch_size
    for rnd in range(start_round, rounds):
        n = min(task.batch_size, task.budget - len(experiments))
        if n <= 0:
            break
        run_id = f"{task_id}/round{rnd}"
        pending = journal.get_all(f"{scope}:round{rnd}")  # proposals of a round that was in flight
        if pending:
            proposals = pending["proposals"]
        else:
            proposals = optimizer.ask(n)
            if not all(_satisfies(task, p) for p in proposals):  # the optimizer honours them; never run one that doesn't
                raise ValidationError("optimizer proposal breaks the campaign's linear constraints",
                                      problems=[{"field": "constraints", "value": p, "limit": "satisfied",
                                                 "message": "constraint broken"}
                                                for p in proposals if not _satisfies(task, p)])
            journal.put(f"{scope}:round{rnd}", "proposals", proposals)
        conditions = [_campaign_conditions(task, p) for p in proposals]
        for c in conditions:  # proposals stay inside the checked box; check anyway, never clamp
            problems, messages = limit_problems(c, lab.limits)
            if problems:
                raise ValidationError("optimizer proposal outside the lab's limits: " + "; ".join(messages),
                                      problems=problems)
        first = len(experiments)
        by_exp = [experiment_steps(lab, first + j, c, prefix=f"r{rnd}.") for j, c in enumerate(conditions)]
        link_experiments(lab, by_exp)
        round_plan = Plan(task, lab, [s for e in by_exp for s in e], plan.checks, [c.model_dump() for c in conditions])
        report("running", len(experiments) / task.budget, {"round": rnd, "proposals": proposals})
        results, error = _run_plan(run_id, round_plan, executor, {**metadata, "round": rnd})
        outcomes = experiment_outcomes(round_plan.steps, results)
        for j, (p, c) in enumerate(zip(proposals, conditions)):
            k = first + j
            rec = {"index": k, "round": rnd, "proposal": p, "conditions": c.model_dump(),
                   "proposed_by": f"planner.optimizer (BoTorch, seed {task.seed})", **outcomes.get(k, {})}
            if any(rec.get(o.name) is None for o in task.objectives):
                rec["failed"] = True
                rec["error"] = (f"{error.error_type}: {error.message}" if error is not None
                                else "no outcome reported")
            for o in task.objectives:
                rec.setdefault(o.name, None)
            journal.put(scope, f"e{k}", rec)
            experiments.append(rec)
        optimizer.tell(proposals, [{o.name: e.get(o.name) for o in task.objectives}
                                   for e in experiments[first:]])
    report("done", 1.0, {})
    front = [obs for obs in optimizer.pareto_front()]
    return {"kind": "campaign", "task_id": task_id, "proposed_by": metadata["proposed_by"],
            "experiments": experiments,
            "pareto_front": [{"conditions": {**task.fixed, **c}, "outcomes": o} for c, o in front],
            "outcome_names": list(OUTCOME_NAMES)}
