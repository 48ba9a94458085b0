"""Compile a task into a plan: steps with resources, durations and dependencies, checked first.

    plan = compile_task(task_json_or_model, load_lab("default"))   # ValidationError lists every problem
    print(dry_run(plan))                                           # the plan and every check

Nothing in a plan has run. Every check runs before anything moves and every problem is collected:
SMILES parse (RDKit), reagents in the inventory with enough volume, incompatible hazard classes
where reagents meet (planner.checks), the lab's process window and each device's limits, and the
preconditions of each step (stations exist, the vial is where a move or a measurement expects it,
station slots, dependency ids and cycles).

One flow experiment becomes (``experiment_steps``, lab profile ``analysis: hplc_robot``):
  fetch_vial (robot: rack -> reactor outlet) -> run_flow (reactor) -> move_vial (robot: outlet ->
  HPLC autosampler) -> measure (HPLC) -> store_vial (robot: autosampler -> rack)
(``analysis: hplc``: run_flow -> measure; ``inline``: run_flow alone, the inline detector's yield)
and successive experiments only wait for what they share (the reactor, the robot, the outlet's
vial slots), so the scheduler can overlap them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aichemist.errors import ValidationError
from aichemist.params import format_problems
from planner import checks
from planner.checks import Check
from planner.lab import LabProfile
from planner.tasks import (FLOW_CONDITION_NAMES, OUTCOME_NAMES, AnyTask, CampaignTask, CategoricalVariable,
                           DispenseStep, FlowConditions, FlowExperimentTask, MeasureStep, MoveVialStep,
                           ProcedureTask, RunFlowExperimentStep, WaitStep, limit_problems, parse_task)


@dataclass
class Step:
    id: str
    op: str  # fetch_vial | run_flow | move_vial | measure | store_vial | wait | dispense
    resources: list[str]
    duration_s: float
    depends_on: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    experiment: int | None = None
    timeout_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "resources": self.resources, "duration_s": self.duration_s,
                "depends_on": self.depends_on, "params": self.params, "experiment": self.experiment,
                "timeout_s": self.timeout_s}


@dataclass
class Plan:
    task: AnyTask
    lab: LabProfile
    steps: list[Step]
    checks: list[Check]
    experiments: list[dict[str, Any]] = field(default_factory=list)  # conditions, when known
    reagent_use_ml: dict[str, float] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.task.kind

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lab": self.lab.name, "steps": [s.to_dict() for s in self.steps],
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
                "experiments": self.experiments, "reagent_use_ml": self.reagent_use_ml}


def _timeout(lab: LabProfile, duration_s: float) -> float:
    return duration_s * lab.durations.timeout_factor + 30.0


def experiment_steps(lab: LabProfile, index: int, conditions: FlowConditions | None,
                     worst_case_duration_s: float | None = None, prefix: str = "") -> list[Step]:
    """The steps of flow experiment ``index`` (five with the robot); dependencies within the experiment only
    (``link_experiments`` adds those between experiments)."""
    p = f"{prefix}e{index}."
    vial = f"{prefix}vial{index}"
    d = lab.durations
    run_s = (checks.flow_duration_s(conditions, lab.reactor) if conditions is not None
             else float(worst_case_duration_s or 0.0))
    cond = conditions.model_dump() if conditions is not None else None
    fetch = Step(p + "fetch_vial", "fetch_vial", [lab.robot], d.move_vial_s,
                 params={"vial_id": vial, "from_station": lab.rack_station, "to_station": lab.reactor_station})
    run = Step(p + "run_flow", "run_flow", [lab.reactor_resource], run_s,
               params={"conditions": cond, "collect_vial": vial, "experiment_id": f"{prefix}e{index}"})
    move = Step(p + "move_vial", "move_vial", [lab.robot], d.move_vial_s, [run.id],
                params={"vial_id": vial, "from_station": lab.reactor_station, "to_station": lab.hplc_station})
    measure = Step(p + "measure", "measure", [lab.hplc], d.measure_s, [run.id],
                   params={"vial_id": vial, "instrument": "hplc", "run_step": run.id,
                           "conc_dfnb_fed_m": cond["conc_dfnb_m"] if cond else None})
    # the measured vial leaves the autosampler (a few slots) for the rack
    store = Step(p + "store_vial", "store_vial", [lab.robot], d.move_vial_s, [measure.id],
                 params={"vial_id": vial, "from_station": lab.hplc_station, "to_station": lab.rack_station})
    if lab.analysis == "inline":
        steps = [run]
    elif lab.analysis == "hplc":
        steps = [run, measure]
    else:
        run.depends_on.append(fetch.id)
        measure.depends_on = [move.id]
        steps = [fetch, run, move, measure, store]
    for s in steps:
        s.experiment = index
        s.timeout_s = _timeout(lab, s.duration_s)
    return steps


def link_experiments(lab: LabProfile, steps_by_experiment: list[list[Step]]) -> None:
    """A new vial goes to the reactor outlet only when a slot there is free: fetch k waits for
    the removal (move_vial) of experiment k - slots."""
    if lab.analysis != "hplc_robot":
        return  # no vial handling by the robot: experiments share only the reactor and the HPLC
    slots = lab.station(lab.reactor_station).vial_slots
    for k in range(slots, len(steps_by_experiment)):
        fetch = steps_by_experiment[k][0]
        removal = steps_by_experiment[k - slots][2]
        fetch.depends_on.append(removal.id)


def _flow_checks(conds: list[tuple[str, FlowConditions]], lab: LabProfile,
                 multiplier: int = 1) -> tuple[list[Check], list[dict[str, Any]], dict[str, float]]:
    problems: list[dict[str, Any]] = []
    window, devices = [], []
    use: dict[str, float] = {}
    for where, c in conds:
        p, _ = limit_problems(c, lab.limits, prefix=where)
        window += p
        devices += checks.check_device_limits(c, lab, where)
        for name, ml in checks.reagent_use_ml(c, lab).items():
            use[name] = use.get(name, 0.0) + ml * multiplier
    out = [Check("process_window", not window,
                 "within the lab's process window" if not window else format_problems(window), window),
           Check("device_limits", not devices,
                 "pump flows and temperature within the devices' ranges" if not devices
                 else "; ".join(p["message"] for p in devices), devices)]
    return out, window + devices, use


def _feed_mixture(lab: LabProfile) -> list[tuple[str, str, list[str]]]:
    r = lab.reactor
    return [(lab.reagent(f.reagent).name, lab.reagent(f.reagent).smiles, lab.reagent(f.reagent).hazard_classes)
            for f in (r.dfnb, r.pyrrolidine, r.solvent)]


def _compile_flow(task: FlowExperimentTask, lab: LabProfile) -> Plan:
    steps = experiment_steps(lab, 0, task.conditions)
    flow_checks, _, use = _flow_checks([("conditions", task.conditions)], lab)
    return Plan(task, lab, steps, flow_checks, [task.conditions.model_dump()], use)


def _campaign_box_corners(task: CampaignTask) -> list[FlowConditions]:
    ranges = {}
    for v in task.variables:
        if isinstance(v, CategoricalVariable) or v.name not in FLOW_CONDITION_NAMES:
            continue
        ranges[v.name] = (v.low, v.high)
    corners = []
    names = list(ranges)
    for combo in itertools.product(*[ranges[n] for n in names]):
        values = {**task.fixed, **dict(zip(names, combo))}
        try:
            corners.append(FlowConditions(**values))
        except Exception:  # reported by the variable checks
            return []
    return corners


def _compile_campaign(task: CampaignTask, lab: LabProfile) -> Plan:
    problems: list[dict[str, Any]] = []
    names = [v.name for v in task.variables]
    for i, v in enumerate(task.variables):
        if v.name not in FLOW_CONDITION_NAMES:
            problems.append({"field": f"variables[{i}].name", "value": v.name, "limit": list(FLOW_CONDITION_NAMES),
                             "message": "not a condition this lab's reactor can set"})
            continue
        if isinstance(v, CategoricalVariable):
            problems.append({"field": f"variables[{i}].type", "value": "categorical", "limit": "continuous",
                             "message": f"{v.name} is a continuous condition"})
            continue
        rng = getattr(lab.limits, v.name)
        for bound, value, limit in (("min", v.low, rng.low), ("max", v.high, rng.high)):
            if (bound == "min" and value < limit) or (bound == "max" and value > limit):
                problems.append({"field": f"variables[{i}].{'low' if bound == 'min' else 'high'}", "value": value,
                                 "limit": limit, "bound": bound, "unit": rng.unit,
                                 "message": f"{v.name} range reaches {value} {rng.unit}, beyond the lab's "
                                            f"{bound} {limit} {rng.unit}"})
    for name in task.fixed:
        if name not in FLOW_CONDITION_NAMES:
            problems.append({"field": f"fixed.{name}", "value": name, "limit": list(FLOW_CONDITION_NAMES),
                             "message": "not a flow condition"})
        elif name in names:
            problems.append({"field": f"fixed.{name}", "value": name, "limit": "not also a variable",
                             "message": "both fixed and a variable"})
    missing = [n for n in FLOW_CONDITION_NAMES if n not in names and n not in task.fixed]
    for n in missing:
        problems.append({"field": "variables", "value": n, "limit": "variable or fixed",
                         "message": f"condition {n} is neither a variable nor fixed"})
    if task.fixed and not missing:
        try:
            fixed_only = {n: task.fixed.get(n, getattr(lab.limits, n).low) for n in FLOW_CONDITION_NAMES}
            p, _ = limit_problems(FlowConditions(**fixed_only), lab.limits, prefix="fixed")
            problems += [q for q in p if q["field"].split(".")[-1] in task.fixed]
        except Exception as exc:
            problems.append({"field": "fixed", "value": task.fixed, "limit": "valid conditions", "message": str(exc)})
    for i, o in enumerate(task.objectives):
        if o.name not in OUTCOME_NAMES:
            problems.append({"field": f"objectives[{i}].name", "value": o.name, "limit": list(OUTCOME_NAMES),
                             "message": "not an outcome an experiment reports"})
    for i, c in enumerate(task.constraints):
        for n in c.coefficients:
            if n not in names:
                problems.append({"field": f"constraints[{i}].coefficients.{n}", "value": n, "limit": names,
                                 "message": "constraint on something that is not a variable"})
    if task.batch_size > task.budget:
        problems.append({"field": "batch_size", "value": task.batch_size, "limit": task.budget, "bound": "max",
                         "message": "batch size larger than the budget"})
    task_check = Check("campaign", not problems, "variables, objectives and constraints consistent with the lab"
                       if not problems else "; ".join(p["message"] for p in problems), problems)

    corners = _campaign_box_corners(task) if not problems else []
    result_checks = [task_check]
    use: dict[str, float] = {}
    worst_s = 0.0
    if corners:
        # every corner of the box must be feasible for the devices (flows are monotone in the
        # variables, so the corners bound every point inside); inventory for the worst corner x budget
        flow_checks, _, _ = _flow_checks([(f"corner{j}", c) for j, c in enumerate(corners)], lab)
        result_checks += [c for c in flow_checks if c.name == "device_limits"]
        per = [checks.reagent_use_ml(c, lab) for c in corners]
        for name in per[0]:
            use[name] = max(p[name] for p in per) * task.budget
        worst_s = max(checks.flow_duration_s(c, lab.reactor) for c in corners)
    by_exp = [experiment_steps(lab, k, None, worst_case_duration_s=worst_s) for k in range(task.budget)]
    link_experiments(lab, by_exp)
    return Plan(task, lab, [s for exp in by_exp for s in exp], result_checks, [], use)


def _compile_procedure(task: ProcedureTask, lab: LabProfile) -> Plan:
    problems: list[dict[str, Any]] = []
    d = lab.durations
    stations = {s.name: s for s in lab.stations}
    ids = [s.id or f"s{i}" for i, s in enumerate(task.steps)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append({"field": "steps[].id", "value": dupes, "limit": "unique", "message": "duplicate step ids"})
    steps: list[Step] = []
    vial_at: dict[str, str] = {}  # where each vial is, as the steps run in order
    occupancy: dict[str, int] = {}
    vial_contents: dict[str, list[tuple[str, str, list[str]]]] = {}
    use: dict[str, float] = {}
    flow_conds: list[tuple[str, FlowConditions]] = []
    vial_experiment: dict[str, tuple[int, str]] = {}  # collection vial -> (experiment, run step)
    smiles_items: list[tuple[str, str]] = []

    def place(vial: str, station: str, where: str) -> None:
        if station not in stations:
            problems.append({"field": where, "value": station, "limit": sorted(stations), "message": "no such station"})
            return
        if occupancy.get(station, 0) >= stations[station].vial_slots:
            problems.append({"field": where, "value": station, "limit": stations[station].vial_slots,
                             "message": f"station {station} has no free vial slot for {vial}"})
        occupancy[station] = occupancy.get(station, 0) + 1
        vial_at[vial] = station

    def remove(vial: str) -> None:
        station = vial_at.pop(vial, None)
        if station is not None:
            occupancy[station] -= 1

    for i, (sid, s) in enumerate(zip(ids, task.steps)):
        where = f"steps[{i}]"
        deps = list(s.after) if s.after else ([ids[i - 1]] if i else [])
        for dep in s.after:
            if dep not in ids[:i] and dep in ids:
                problems.append({"field": f"{where}.after", "value": dep, "limit": "an earlier step",
                                 "message": f"step {sid} waits for a later step {dep} (cycle)"})
            elif dep not in ids:
                problems.append({"field": f"{where}.after", "value": dep, "limit": ids, "message": "no such step"})
        if isinstance(s, MoveVialStep):
            at = vial_at.get(s.vial_id)
            if at is None and s.from_station == "vial_rack":
                at = "vial_rack"  # empty vials start in the rack
            elif at is None:
                problems.append({"field": f"{where}.vial_id", "value": s.vial_id, "limit": "an existing vial",
                                 "message": f"vial {s.vial_id} is not at {s.from_station} (nowhere yet)"})
            if at is not None and at != s.from_station:
                problems.append({"field": f"{where}.from_station", "value": s.from_station, "limit": at,
                                 "message": f"vial {s.vial_id} is at {at}, not {s.from_station}"})
            remove(s.vial_id)
            place(s.vial_id, s.to_station, f"{where}.to_station")
            if s.from_station not in stations:
                problems.append({"field": f"{where}.from_station", "value": s.from_station, "limit": sorted(stations),
                                 "message": "no such station"})
            steps.append(Step(sid, "move_vial", [lab.robot], d.move_vial_s, deps,
                              {"vial_id": s.vial_id, "from_station": s.from_station, "to_station": s.to_station}))
        elif isinstance(s, RunFlowExperimentStep):
            flow_conds.append((f"{where}.conditions", s.conditions))
            if s.collect_vial and vial_at.get(s.collect_vial) != lab.reactor_station:
                problems.append({"field": f"{where}.collect_vial", "value": s.collect_vial,
                                 "limit": f"at {lab.reactor_station}",
                                 "message": f"collection vial {s.collect_vial} is not at the reactor outlet "
                                            f"(it is at {vial_at.get(s.collect_vial, 'nowhere')})"})
            steps.append(Step(sid, "run_flow", [lab.reactor_resource],
                              checks.flow_duration_s(s.conditions, lab.reactor), deps,
                              {"conditions": s.conditions.model_dump(), "collect_vial": s.collect_vial,
                               "experiment_id": sid}, experiment=len(flow_conds) - 1))
            if s.collect_vial:
                vial_experiment[s.collect_vial] = (len(flow_conds) - 1, sid)
        elif isinstance(s, MeasureStep):
            if vial_at.get(s.vial_id) != lab.hplc_station:
                problems.append({"field": f"{where}.vial_id", "value": s.vial_id, "limit": f"at {lab.hplc_station}",
                                 "message": f"vial {s.vial_id} is not in the HPLC autosampler "
                                            f"(it is at {vial_at.get(s.vial_id, 'nowhere')})"})
            exp_index, run_step = vial_experiment.get(s.vial_id, (None, ""))
            steps.append(Step(sid, "measure", [lab.hplc], d.measure_s, deps,
                              {"vial_id": s.vial_id, "instrument": s.instrument, "run_step": run_step,
                               "conc_dfnb_fed_m": flow_conds[exp_index][1].conc_dfnb_m if exp_index is not None
                               else None},
                              experiment=exp_index))
        elif isinstance(s, WaitStep):
            steps.append(Step(sid, "wait", [], s.duration_s, deps, {"duration_s": s.duration_s}))
        elif isinstance(s, DispenseStep):
            names = {r.name for r in lab.inventory}
            if s.reagent not in names:
                problems.append({"field": f"{where}.reagent", "value": s.reagent, "limit": sorted(names),
                                 "message": f"reagent {s.reagent!r} is not in the inventory"})
            else:
                reagent = lab.reagent(s.reagent)
                use[s.reagent] = use.get(s.reagent, 0.0) + s.volume_ml
                smiles_items.append((f"inventory.{s.reagent}.smiles", reagent.smiles))
                vial_contents.setdefault(s.vial_id, []).append((reagent.name, reagent.smiles,
                                                                reagent.hazard_classes))
                if s.smiles:
                    smiles_items.append((f"{where}.smiles", s.smiles))
                    if checks.parse_smiles(s.smiles) and checks.parse_smiles(reagent.smiles):
                        from rdkit import Chem

                        same = (Chem.CanonSmiles(s.smiles) == Chem.CanonSmiles(reagent.smiles))
                        if not same:
                            problems.append({"field": f"{where}.smiles", "value": s.smiles, "limit": reagent.smiles,
                                             "message": f"{s.reagent} in the inventory is {reagent.smiles}, "
                                                        f"not {s.smiles}"})
            if s.vial_id not in vial_at:
                place(s.vial_id, "vial_rack", f"{where}.vial_id")
            steps.append(Step(sid, "dispense", [lab.robot], d.dispense_s, deps,
                              {"reagent": s.reagent, "volume_ml": s.volume_ml, "vial_id": s.vial_id}))
    for st in steps:
        st.timeout_s = _timeout(lab, st.duration_s)
    pre = Check("preconditions", not problems,
                f"{len(steps)} step(s): stations, vial positions and dependencies consistent" if not problems
                else "; ".join(p["message"] for p in problems), problems)
    result = [pre]
    if flow_conds:
        flow_checks, _, flow_use = _flow_checks(flow_conds, lab)
        result += flow_checks
        for k, v in flow_use.items():
            use[k] = use.get(k, 0.0) + v
    result.append(checks.check_incompatible({f"vial {v}": c for v, c in vial_contents.items()}))
    smiles_check = checks.check_smiles(smiles_items)
    return Plan(task, lab, steps, [pre, smiles_check] + result[1:], [c.model_dump() for _, c in flow_conds], use)


def compile_task(task: Any, lab: LabProfile) -> Plan:
    """Task (JSON text, dict or parsed model) -> checked Plan. Raises one ValidationError (or its
    subclass LimitError when every problem is a limit) listing every problem; nothing runs."""
    if isinstance(task, (str, bytes)):
        try:
            task = json.loads(task)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"task is not JSON: {exc}", problems=[{"field": "<root>", "value": None,
                                                                        "limit": "JSON", "message": str(exc)}])
    if isinstance(task, dict):
        task = parse_task(task)
    if isinstance(task, FlowExperimentTask):
        plan = _compile_flow(task, lab)
    elif isinstance(task, CampaignTask):
        plan = _compile_campaign(task, lab)
    elif isinstance(task, ProcedureTask):
        plan = _compile_procedure(task, lab)
    else:
        raise ValidationError(f"unknown task type {type(task).__name__}")
    # the lab's own structures and the reactor's feed mixture are checked for every task
    lab_smiles = checks.check_smiles([(f"inventory.{r.name}.smiles", r.smiles) for r in lab.inventory])
    if plan.kind in ("flow_experiment", "campaign") or any(s.op == "run_flow" for s in plan.steps):
        plan.checks.append(checks.check_incompatible({"reactor": _feed_mixture(lab)}))
    plan.checks.append(checks.check_inventory(plan.reagent_use_ml, lab))
    if not any(c.name == "smiles" for c in plan.checks):
        plan.checks.insert(0, lab_smiles)
    elif not lab_smiles.ok:
        plan.checks.insert(0, lab_smiles)
    failed = [c for c in plan.checks if not c.ok]
    if failed:
        problems = [p for c in failed for p in c.problems]
        message = f"task rejected ({len(problems)} problem(s)): " + "; ".join(
            p.get("message", "") or str(p) for p in problems)
        err = ValidationError(message, problems=problems, checks=[c.name for c in failed])
        raise err
    return plan


def dry_run(plan: Plan, schedule: Any = None) -> str:
    """A text report: every check, then every step (with its scheduled start when given)."""
    lines = [f"dry run: {plan.kind} task {getattr(plan.task, 'name', '') or '(unnamed)'} in lab {plan.lab.name}",
             "checks:"]
    for c in plan.checks:
        lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    if plan.reagent_use_ml:
        lines.append("reagents: " + ", ".join(f"{k} {v:.1f} mL" for k, v in sorted(plan.reagent_use_ml.items())))
    starts = {}
    if schedule is not None:
        starts = {s.step_id: s.start_s for s in schedule.entries}
        lines.append(f"schedule: makespan {schedule.makespan_s:.0f} s")
    lines.append(f"steps ({len(plan.steps)}):")
    for s in plan.steps:
        at = f"t={starts[s.id]:7.0f}s " if s.id in starts else ""
        deps = f" after {','.join(s.depends_on)}" if s.depends_on else ""
        cond = s.params.get("conditions")
        what = (" " + ", ".join(f"{k}={v:g}" for k, v in cond.items())) if cond else ""
        vial = f" {s.params['vial_id']}" if "vial_id" in s.params else ""
        lines.append(f"  {at}{s.id:<22} {s.op:<11} [{','.join(s.resources) or '-'}] {s.duration_s:6.0f} s"
                     f"{vial}{what}{deps}")
    lines.append("nothing was run (dry run)")
    return "\n".join(lines)
