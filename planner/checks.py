"""Chemistry and device checks the compiler runs before anything moves.

- SMILES: every structure must parse with RDKit (``Chem.MolFromSmiles`` returns None otherwise).
- Hazard classes by SMARTS substructure (azide, acid, oxidizer, reducer, cyanide, water-reactive,
  strong base, water), plus classes an inventory entry declares. Incompatible pairs of classes
  (``INCOMPATIBLE``) must never be mixed: azides with acids (hydrazoic acid), cyanides with acids
  (HCN), oxidizers with reducers, water-reactive reagents with water, strong acids with strong bases.
- Device limits of the flow reactor: pump flows from residence time and stoichiometry, each within
  its pump's range, the make-up solvent flow not negative, the temperature within the reactor's.

Each check returns ``Check`` rows (name, ok, detail) and, when it fails, ``problems`` in the
shape of ``ValidationError.problems`` (field, value, limit, message).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable

from planner.lab import LabProfile, ReactorProfile
from planner.tasks import FlowConditions


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    problems: list[dict[str, Any]] = field(default_factory=list)


#: hazard class -> SMARTS patterns (any match puts the molecule in the class)
HAZARD_SMARTS: dict[str, tuple[str, ...]] = {
    "azide": ("[N-]=[N+]=[N]", "[N]=[N+]=[N-]", "N=[N+]=[N-]", "[N-][N+]#N"),
    "acid": ("[CX3](=O)[OX2H1]", "[SX4](=O)(=O)[OX2H1]", "[PX4](=O)[OX2H1]", "[ClH1,BrH1,IH1,FH1]",
             "[OX2H1][N+](=O)[O-]", "[OX2H1]Cl(=O)(=O)=O"),
    "oxidizer": ("[OX2][OX2]", "[O-][N+](=O)[O-]", "[OX2H1][N+](=O)[O-]", "[Mn](=O)(=O)(=O)[O-]",
                 "[O-][Cl]", "[O-]Cl(=O)(=O)=O", "OCl(=O)(=O)=O", "[Cr](=O)(=O)", "[O-][O-]"),
    "reducer": ("[BH4-]", "[AlH4-]", "[H-]", "[BH3]", "[Li,Na,K;+0]"),
    "cyanide": ("[C-]#N", "[CH1]#N"),
    "water_reactive": ("[Li,Na,K;X0;+0]", "[Li,Na,K][H]", "[H-]", "[AlH4-]", "[CX3](=O)[Cl]",
                       "[SX4](=O)(=O)Cl"),
    "strong_base": ("[OH-]", "[O-][CX4]", "[NH2-]", "[Li][CX4]"),
    "water": ("[OH2]",),
}

#: pairs of hazard classes that must never meet (order-free), with the reason
INCOMPATIBLE: dict[frozenset[str], str] = {
    frozenset({"azide", "acid"}): "azides with acids release hydrazoic acid (toxic, explosive)",
    frozenset({"cyanide", "acid"}): "cyanides with acids release hydrogen cyanide",
    frozenset({"oxidizer", "reducer"}): "oxidizers with reducers react violently",
    frozenset({"water_reactive", "water"}): "water-reactive reagents with water release heat and hydrogen",
    frozenset({"acid", "strong_base"}): "strong acids with strong bases neutralise violently",
}


@functools.lru_cache(maxsize=1024)
def _mol(smiles: str) -> Any:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is reported by us, with the field, not on stderr
    return Chem.MolFromSmiles(smiles) if smiles else None


@functools.lru_cache(maxsize=None)
def _pattern(smarts: str) -> Any:
    from rdkit import Chem

    pattern = Chem.MolFromSmarts(smarts)
    if pattern is None:  # a bug in the table above, not in the task
        raise RuntimeError(f"invalid SMARTS in the hazard table: {smarts!r}")
    return pattern


def parse_smiles(smiles: str) -> bool:
    return _mol(smiles) is not None


def hazard_classes(smiles: str, declared: Iterable[str] = ()) -> set[str]:
    """Hazard classes of a structure (by SMARTS) plus the declared ones."""
    classes = set(declared)
    mol = _mol(smiles)
    if mol is None:
        return classes
    from rdkit import Chem

    molh = Chem.AddHs(mol)  # explicit H so [OH2], [ClH1] match small inorganics
    for cls, patterns in HAZARD_SMARTS.items():
        if any(molh.HasSubstructMatch(_pattern(p)) or mol.HasSubstructMatch(_pattern(p)) for p in patterns):
            classes.add(cls)
    return classes


def check_smiles(items: Iterable[tuple[str, str]]) -> Check:
    """items: (where, smiles). Every SMILES must parse."""
    problems = []
    seen = []
    for where, smiles in items:
        seen.append(where)
        if not parse_smiles(smiles):
            problems.append({"field": where, "value": smiles, "limit": "valid SMILES (RDKit)",
                             "message": "SMILES does not parse"})
    detail = (f"{len(seen)} structure(s) parse" if not problems
              else "; ".join(f"{p['field']}={p['value']!r} does not parse" for p in problems))
    return Check("smiles", not problems, detail, problems)


def check_incompatible(groups: dict[str, list[tuple[str, str, Iterable[str]]]]) -> Check:
    """groups: where the reagents meet (a vial, the reactor) -> [(reagent name, smiles, declared)]."""
    problems = []
    for where, reagents in groups.items():
        classes = [(name, hazard_classes(smiles, declared)) for name, smiles, declared in reagents]
        for i in range(len(classes)):
            for j in range(i + 1, len(classes)):
                (a, ca), (b, cb) = classes[i], classes[j]
                for pair, reason in INCOMPATIBLE.items():
                    x, y = tuple(pair)
                    if (x in ca and y in cb) or (y in ca and x in cb):
                        problems.append({"field": where, "value": [a, b], "limit": sorted(pair),
                                         "message": f"{a} + {b} in {where}: {reason}"})
    detail = (f"no incompatible pair in {len(groups)} mixture(s)" if not problems
              else "; ".join(p["message"] for p in problems))
    return Check("compatibility", not problems, detail, problems)


def feed_flows_ml_min(conditions: FlowConditions, lab: LabProfile) -> dict[str, float]:
    """Pump flows (mL/min) for the conditions: total = V / tau; stocks diluted to the inlet."""
    reactor = lab.reactor
    total = reactor.volume_ml / conditions.residence_time_min
    dfnb = lab.reagent(reactor.dfnb.reagent)
    pyrr = lab.reagent(reactor.pyrrolidine.reagent)
    q_dfnb = conditions.conc_dfnb_m / (dfnb.conc_m or 1.0) * total
    q_pyrr = conditions.conc_dfnb_m * conditions.equivalents / (pyrr.conc_m or 1.0) * total
    return {reactor.dfnb.pump: q_dfnb, reactor.pyrrolidine.pump: q_pyrr,
            reactor.solvent.pump: total - q_dfnb - q_pyrr}


def reagent_use_ml(conditions: FlowConditions, lab: LabProfile) -> dict[str, float]:
    """Reagent volumes one flow experiment consumes: priming, steady state and collection at the
    feed flows, then flushing with the solvent."""
    r = lab.reactor
    flows = feed_flows_ml_min(conditions, lab)
    pumping_min = (r.steady_state_residence_times + r.collect_residence_times) * conditions.residence_time_min
    use = {}
    for feed in (r.dfnb, r.pyrrolidine, r.solvent):
        use[feed.reagent] = use.get(feed.reagent, 0.0) + max(flows[feed.pump], 0.0) * pumping_min + r.prime_volume_ml
    use[r.solvent.reagent] += r.flush_residence_times * r.volume_ml
    return use


def flow_duration_s(conditions: FlowConditions, reactor: ReactorProfile) -> float:
    n = reactor.steady_state_residence_times + reactor.collect_residence_times + reactor.flush_residence_times
    return reactor.heat_up_s + n * conditions.residence_time_min * 60.0


def check_device_limits(conditions: FlowConditions, lab: LabProfile, where: str) -> list[dict[str, Any]]:
    """Problems for pump flows and temperature beyond the devices' ranges (never clamped)."""
    problems = []
    r = lab.reactor
    flows = feed_flows_ml_min(conditions, lab)
    for feed in (r.dfnb, r.pyrrolidine, r.solvent):
        q = flows[feed.pump]
        if q > feed.max_flow_ml_min:
            problems.append({"field": f"{where}.{feed.pump}.flow_ml_min", "value": round(q, 4),
                             "limit": feed.max_flow_ml_min, "bound": "max", "unit": "mL/min",
                             "message": f"{feed.pump}: flow {q:.3f} mL/min is above the maximum "
                                        f"{feed.max_flow_ml_min} mL/min"})
        elif q < 0:
            problems.append({"field": f"{where}.{feed.pump}.flow_ml_min", "value": round(q, 4), "limit": 0.0,
                             "bound": "min", "unit": "mL/min",
                             "message": f"{feed.pump}: the stocks cannot be diluted to these concentrations "
                                        f"(make-up flow {q:.3f} mL/min < 0)"})
        elif 0 < q < feed.min_flow_ml_min:
            problems.append({"field": f"{where}.{feed.pump}.flow_ml_min", "value": round(q, 4),
                             "limit": feed.min_flow_ml_min, "bound": "min", "unit": "mL/min",
                             "message": f"{feed.pump}: flow {q:.4f} mL/min is below the metering minimum "
                                        f"{feed.min_flow_ml_min} mL/min"})
    if not r.min_temp_c <= conditions.temp_c <= r.max_temp_c:
        bound, limit = ("max", r.max_temp_c) if conditions.temp_c > r.max_temp_c else ("min", r.min_temp_c)
        problems.append({"field": f"{where}.temp_c", "value": conditions.temp_c, "limit": limit, "bound": bound,
                         "unit": "C", "message": f"thermostat: {conditions.temp_c} C beyond its {bound} {limit} C"})
    return problems


def check_inventory(needed_ml: dict[str, float], lab: LabProfile) -> Check:
    problems = []
    names = {r.name for r in lab.inventory}
    for name, volume in sorted(needed_ml.items()):
        if name not in names:
            problems.append({"field": f"inventory.{name}", "value": name, "limit": sorted(names),
                             "message": f"reagent {name!r} is not in the inventory"})
            continue
        have = lab.reagent(name).volume_ml
        if volume > have:
            problems.append({"field": f"inventory.{name}.volume_ml", "value": round(volume, 3), "limit": have,
                             "bound": "max", "unit": "mL",
                             "message": f"{name}: needs {volume:.1f} mL, {have:.1f} mL on hand"})
    detail = ("enough of " + ", ".join(f"{k} ({v:.1f} mL)" for k, v in sorted(needed_ml.items()))
              if not problems else "; ".join(p["message"] for p in problems))
    return Check("inventory", not problems, detail, problems)
