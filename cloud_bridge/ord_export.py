"""Export a finished flow-experiment task as Open Reaction Database records (ord-schema).

One ORD ``Reaction`` per experiment of the task's result, collected in a ``Dataset``. The records
are checked with ord-schema's own validator before they are served. If the planner's record
helpers (``planner.records``) are present they are preferred, so the lab writes one kind of record.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from ord_schema import validations
from ord_schema.proto import dataset_pb2, reaction_pb2

from aichemist.errors import ValidationError

SMILES = {
    "dfnb": "O=[N+]([O-])c1ccc(F)cc1F",          # 2,4-difluoronitrobenzene
    "pyrrolidine": "C1CCNC1",
    "ethanol": "CCO",
    "ortho": "O=[N+]([O-])c1ccc(F)cc1N1CCCC1",     # 1-(5-fluoro-2-nitrophenyl)pyrrolidine
}


def _compound(name: str, role: int, smiles: str | None = None) -> reaction_pb2.Compound:
    c = reaction_pb2.Compound()
    c.identifiers.add(type=reaction_pb2.CompoundIdentifier.NAME, value=name)
    if smiles:
        c.identifiers.add(type=reaction_pb2.CompoundIdentifier.SMILES, value=smiles)
    c.reaction_role = role
    c.amount.unmeasured.type = reaction_pb2.UnmeasuredAmount.CUSTOM
    c.amount.unmeasured.details = "continuous feed; see the reaction notes for the inlet concentration"
    return c


def flow_reaction(task_id: str, index: int, experiment: dict[str, Any]) -> reaction_pb2.Reaction:
    conditions = experiment.get("conditions") or {}
    try:
        tau_min = float(conditions["residence_time_min"])
        temp_c = float(conditions["temp_c"])
        equiv = float(conditions["equivalents"])
        conc = float(conditions["conc_dfnb_m"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"experiment {index} of task {task_id} lacks usable conditions ({exc})",
                              problems=[{"field": f"experiments[{index}].conditions", "value": conditions,
                                         "limit": "residence_time_min, temp_c, equivalents, conc_dfnb_m"}])
    rxn = reaction_pb2.Reaction()
    rxn.identifiers.add(type=reaction_pb2.ReactionIdentifier.CUSTOM, details="aichemist experiment",
                        value=f"SnAr DFNB + pyrrolidine, task {task_id} experiment {index}")
    R = reaction_pb2.ReactionRole
    rxn.inputs["DFNB"].components.append(_compound("2,4-difluoronitrobenzene", R.REACTANT, SMILES["dfnb"]))
    rxn.inputs["pyrrolidine"].components.append(_compound("pyrrolidine", R.REACTANT, SMILES["pyrrolidine"]))
    rxn.inputs["ethanol"].components.append(_compound("ethanol", R.SOLVENT, SMILES["ethanol"]))
    rxn.conditions.temperature.setpoint.value = temp_c
    rxn.conditions.temperature.setpoint.units = reaction_pb2.Temperature.CELSIUS
    rxn.conditions.temperature.control.type = reaction_pb2.TemperatureConditions.TemperatureControl.CUSTOM
    rxn.conditions.temperature.control.details = "thermostatted flow reactor"
    rxn.conditions.flow.type = reaction_pb2.FlowConditions.PLUG_FLOW_REACTOR
    rxn.conditions.flow.details = (f"inlet DFNB {conc} M, pyrrolidine {equiv} equiv, "
                                   f"residence time {tau_min} min")
    rxn.notes.procedure_details = (f"Continuous flow; residence_time_min={tau_min}, temp_c={temp_c}, "
                                   f"equivalents={equiv}, conc_dfnb_m={conc}.")
    outcome = rxn.outcomes.add()
    outcome.reaction_time.value = tau_min
    outcome.reaction_time.units = reaction_pb2.Time.MINUTE
    outcome.analyses["hplc"].type = reaction_pb2.Analysis.LC
    outcome.analyses["hplc"].details = "HPLC of the collected product"
    product = outcome.products.add()
    product.identifiers.add(type=reaction_pb2.CompoundIdentifier.NAME,
                            value="1-(5-fluoro-2-nitrophenyl)pyrrolidine")
    product.identifiers.add(type=reaction_pb2.CompoundIdentifier.SMILES, value=SMILES["ortho"])
    product.is_desired_product = True
    product.reaction_role = R.PRODUCT
    y = experiment.get("yield_fraction")
    if isinstance(y, (int, float)):
        m = product.measurements.add()
        m.analysis_key = "hplc"
        m.type = reaction_pb2.ProductMeasurement.YIELD
        m.percentage.value = 100.0 * float(y)
    extra = {k: experiment[k] for k in ("sty_kg_m3_h", "e_factor") if isinstance(experiment.get(k), (int, float))}
    if extra:
        outcome.analyses["hplc"].details += "; " + ", ".join(f"{k}={v:.6g}" for k, v in extra.items())
    rxn.provenance.record_created.time.value = "2026-01-01T00:00:00Z"
    rxn.provenance.record_created.person.name = "aichemist cloud bridge"
    rxn.provenance.record_created.person.organization = "aichemist"
    rxn.provenance.record_created.person.email = "bridge@aichemist.invalid"
    return rxn


def dataset_for_result(result: dict[str, Any], *, finished_at_iso: str) -> dict[str, Any]:
    """An ORD Dataset (as ORD's JSON form) for one task result from ``store.get_result``."""
    task_id = result["task_id"]
    dataset = dataset_pb2.Dataset(name=f"aichemist task {task_id}",
                                  description=f"Flow experiments of aichemist task {task_id} "
                                              f"(campaign {result.get('campaign') or '-'})")
    for i, exp in enumerate(result.get("experiments", [])):
        rxn = flow_reaction(task_id, i, exp)
        rxn.provenance.record_created.time.value = finished_at_iso
        rxn.reaction_id = f"ord-{task_id.replace('-', '')}{i:04d}"[:36]
        dataset.reactions.append(rxn)
    output = validations.validate_message(dataset, raise_on_error=False)
    if output.errors:
        raise ValidationError("ORD record did not validate: " + "; ".join(output.errors[:5]),
                              problems=[{"field": "ord", "value": e, "limit": "ord-schema"} for e in output.errors[:5]])
    return json_format.MessageToDict(dataset, preserving_proto_field_name=True)
