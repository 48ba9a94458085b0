"""Experiment records: Open Reaction Database (ord-schema) records, and rosbag2 MCAP recording.

``ord_record(experiment, lab, task_id=..., proposed_by=...)`` builds an ORD ``Reaction`` for one
flow experiment of the SnAr reaction: the three feeds as inputs (SMILES from the lab inventory,
stock concentrations, pump flows), the plug-flow conditions (temperature setpoint, residence
time, the device settings), the outcome (ortho product yield from the inline detector and from
the HPLC, the raw data files) and the provenance (task id, who or which model proposed the
conditions, when it ran). It is validated with ``ord_schema.validations.validate_message``.
``OrdRecorder`` subscribes to the executor's document stream and writes one record per finished
experiment (JSON text of the protobuf) plus a ``Dataset`` at the end of a run.

``BagRecorder`` writes a rosbag2 bag with MCAP storage (``rosbags``), from serialized CDR messages
as an rclpy raw subscription delivers them; message definitions come from the type store (standard
messages) or from the installed interface packages' .msg files (aichemist_interfaces).
"""

from __future__ import annotations

import datetime
import json
import pathlib
import sys
import threading
from typing import Any, Iterable, Optional

from aichemist.errors import ConfigurationError, ValidationError
from planner.checks import feed_flows_ml_min
from planner.lab import LabProfile
from planner.tasks import FlowConditions

PRODUCT_SMILES = "O=[N+]([O-])c1ccc(F)cc1N1CCCC1"  # ortho product, 2-fluoro-4-nitro... pyrrolidinyl adduct
REACTION_SMILES = "O=[N+]([O-])c1ccc(F)cc1F.C1CCNC1>CCO>" + PRODUCT_SMILES


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def ord_record(experiment: dict[str, Any], lab: LabProfile, *, task_id: str, proposed_by: str = "",
               reaction_id: str = "", data_files: Iterable[str] = (), started_at: str = "") -> Any:
    """One flow experiment as an ORD Reaction (validated). ``experiment`` holds ``conditions``
    (planner.tasks.FlowConditions fields) and outcomes (``yield_fraction``, ``hplc``, ...)."""
    from ord_schema import validations
    from ord_schema.proto import reaction_pb2 as pb

    cond = FlowConditions(**experiment["conditions"])
    reactor = lab.reactor
    flows = feed_flows_ml_min(cond, lab)
    rxn = pb.Reaction()
    if reaction_id:
        rxn.reaction_id = reaction_id
    ident = rxn.identifiers.add()
    ident.type = pb.ReactionIdentifier.REACTION_SMILES
    ident.value = REACTION_SMILES

    def add_input(key: str, feed: Any, role: int, conc_m: Optional[float]) -> None:
        reagent = lab.reagent(feed.reagent)
        inp = rxn.inputs[key]
        comp = inp.components.add()
        cid = comp.identifiers.add()
        cid.type = pb.CompoundIdentifier.SMILES
        cid.value = reagent.smiles
        name = comp.identifiers.add()
        name.type = pb.CompoundIdentifier.NAME
        name.value = reagent.name
        comp.reaction_role = role
        comp.amount.volume.value = round(flows[feed.pump] * cond.residence_time_min, 6) or 0.0
        comp.amount.volume.units = pb.Volume.MILLILITER
        if key == "DFNB":
            comp.is_limiting = True
        inp.flow_rate.value = round(flows[feed.pump], 6)
        inp.flow_rate.units = pb.FlowRate.MILLILITER_PER_MINUTE
        inp.addition_device.type = pb.ReactionInput.AdditionDevice.PISTON_PUMP
        inp.addition_device.details = f"{feed.pump} ({reagent.name}"+ (f", {conc_m} M stock)" if conc_m else ")")

    add_input("DFNB", reactor.dfnb, pb.ReactionRole.REACTANT, lab.reagent(reactor.dfnb.reagent).conc_m)
    add_input("pyrrolidine", reactor.pyrrolidine, pb.ReactionRole.REACTANT,
              lab.reagent(reactor.pyrrolidine.reagent).conc_m)
    add_input("solvent", reactor.solvent, pb.ReactionRole.SOLVENT, None)

    rxn.setup.is_automated = True
    rxn.setup.automation_platform = "aichemist"
    rxn.setup.vessel.type = pb.Vessel.CUSTOM
    rxn.setup.vessel.details = f"flow reactor coil, {reactor.volume_ml} mL"
    rxn.setup.vessel.volume.value = reactor.volume_ml
    rxn.setup.vessel.volume.units = pb.Volume.MILLILITER
    rxn.conditions.temperature.setpoint.value = cond.temp_c
    rxn.conditions.temperature.setpoint.units = pb.Temperature.CELSIUS
    rxn.conditions.temperature.control.type = pb.TemperatureConditions.TemperatureControl.CUSTOM
    rxn.conditions.temperature.control.details = "recirculating thermostat"
    rxn.conditions.flow.type = pb.FlowConditions.PLUG_FLOW_REACTOR
    rxn.conditions.flow.pump_type = ", ".join(f.pump for f in (reactor.dfnb, reactor.pyrrolidine, reactor.solvent))
    device_settings = {"residence_time_min": cond.residence_time_min, "temp_c": cond.temp_c,
                       "equivalents": cond.equivalents, "conc_dfnb_m": cond.conc_dfnb_m,
                       "pump_flows_ml_min": {k: round(v, 6) for k, v in flows.items()},
                       "reactor_volume_ml": reactor.volume_ml}
    if experiment.get("flow_record"):
        device_settings["flow_record"] = experiment["flow_record"]
    rxn.conditions.flow.details = json.dumps(device_settings, default=str)
    rxn.conditions.details = f"steady state after {reactor.steady_state_residence_times:g} residence times"

    out = rxn.outcomes.add()
    out.reaction_time.value = cond.residence_time_min
    out.reaction_time.units = pb.Time.MINUTE
    product = out.products.add()
    pid = product.identifiers.add()
    pid.type = pb.CompoundIdentifier.SMILES
    pid.value = PRODUCT_SMILES
    product.is_desired_product = True
    product.reaction_role = pb.ReactionRole.PRODUCT
    files = list(data_files)
    sources = []
    if experiment.get("flow_record") is not None or ("hplc" not in experiment and experiment.get("yield_fraction")
                                                      is not None):
        sources.append(("inline_uv", pb.Analysis.UV, experiment.get("flow_record", {}).get("yield_fraction",
                                                                                          experiment.get("yield_fraction"))))
    if isinstance(experiment.get("hplc"), dict):
        sources.append(("hplc", pb.Analysis.LC, experiment["hplc"].get("yield_fraction")))
    for key, kind, value in sources:
        analysis = out.analyses[key]
        analysis.type = kind
        analysis.details = "inline UV-Vis detector at steady state" if key == "inline_uv" else "online HPLC"
        for n, path in enumerate(f for f in files if (key in f) or len(sources) == 1):
            analysis.data[f"raw{n}"].url = path if "://" in path else pathlib.Path(path).resolve().as_uri()
            analysis.data[f"raw{n}"].description = "raw data file"
        if value is not None:
            m = product.measurements.add()
            m.analysis_key = key
            m.type = pb.ProductMeasurement.YIELD
            m.percentage.value = round(100.0 * float(value), 6)
    for name in ("sty_kg_m3_h", "e_factor"):
        if experiment.get(name) is not None:
            m = product.measurements.add()
            m.analysis_key = sources[0][0] if sources else ""
            m.type = pb.ProductMeasurement.CUSTOM
            m.details = name
            m.float_value.value = float(experiment[name])
            if not sources:
                m.ClearField("analysis_key")

    prov = rxn.provenance
    prov.experimenter.name = "aichemist planner"
    prov.experimenter.organization = lab.name
    if started_at:
        prov.experiment_start.value = started_at
    prov.record_created.time.value = _now_iso()
    prov.record_created.person.name = "aichemist planner"
    prov.record_created.person.email = lab.records_contact_email
    who = proposed_by or experiment.get("proposed_by") or "unknown"
    prov.record_created.details = json.dumps({"task_id": task_id, "proposed_by": who,
                                              "experiment": experiment.get("index")})
    prov.reaction_metadata["task_id"].string_value = task_id
    prov.reaction_metadata["proposed_by"].string_value = who
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # ord-schema's atom-mapping probe logs through RDKit
    result = validations.validate_message(rxn, raise_on_error=False)
    if result.errors:
        raise ValidationError("ORD record does not validate: " + "; ".join(result.errors),
                              problems=[{"field": "ord", "value": e, "limit": "ord-schema", "message": e}
                                        for e in result.errors])
    return rxn


def write_ord_json(message: Any, path: pathlib.Path) -> pathlib.Path:
    """Write a protobuf message as ORD JSON text (atomically: a temporary file, then rename)."""
    from google.protobuf import json_format

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json_format.MessageToJson(message, indent=1))
    tmp.replace(path)
    return path


class OrdRecorder:
    """Executor document-stream subscriber: one ORD record per experiment whose steps succeeded."""

    def __init__(self, lab: LabProfile, out_dir: str | pathlib.Path) -> None:
        self.lab = lab
        self.out_dir = pathlib.Path(out_dir)
        self.written: list[pathlib.Path] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, doc: dict[str, Any]) -> None:
        with self._lock:
            if doc["type"] == "start":
                steps = {s["id"]: s for s in doc["steps"]}
                self._runs[doc["uid"]] = {"run_id": doc["run_id"], "steps": steps, "results": {},
                                          "meta": doc.get("metadata", {}), "started": _now_iso()}
            elif doc["type"] == "event" and doc.get("state") == "succeeded" and doc.get("run_uid") in self._runs:
                self._runs[doc["run_uid"]]["results"][doc["step_id"]] = doc.get("result") or {}
            elif doc["type"] == "stop" and doc.get("run_uid") in self._runs:
                self._finish(self._runs.pop(doc["run_uid"]))

    def _finish(self, run: dict[str, Any]) -> None:
        from ord_schema.proto import dataset_pb2

        by_exp: dict[int, dict[str, Any]] = {}
        for sid, step in run["steps"].items():
            k = step.get("experiment")
            if k is None or step["op"] not in ("run_flow", "measure") or sid not in run["results"]:
                continue
            rec = by_exp.setdefault(k, {"index": k})
            if step["op"] == "run_flow":
                rec["conditions"] = step["params"]["conditions"]
                rec.update(run["results"][sid])
            else:
                rec["hplc"] = run["results"][sid]
        reactions = []
        safe_run = run["run_id"].replace("/", "_")
        for k, exp in sorted(by_exp.items()):
            if "conditions" not in exp:
                continue
            rxn = ord_record(exp, self.lab, task_id=run["meta"].get("task_id", run["run_id"]),
                             proposed_by=run["meta"].get("proposed_by", ""), started_at=run["started"])
            reactions.append(rxn)
            self.written.append(write_ord_json(rxn, self.out_dir / f"{safe_run}_e{k}.ord.json"))
        if reactions:
            ds = dataset_pb2.Dataset(name=f"aichemist run {run['run_id']}",
                                     description=f"flow experiments of task {run['meta'].get('task_id', '')}")
            ds.reactions.extend(reactions)
            self.written.append(write_ord_json(ds, self.out_dir / f"{safe_run}.dataset.ord.json"))


# ---- rosbag2 (MCAP) ------------------------------------------------------------------------
def _share_dirs() -> list[pathlib.Path]:
    import os

    dirs = [pathlib.Path(sys.prefix) / "share"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(pathlib.Path(prefix) / "share")
    return dirs


def _msgdef_from_share(msgtype: str) -> Optional[str]:
    pkg, kind, name = msgtype.split("/")
    for share in _share_dirs():
        path = share / pkg / kind / f"{name}.msg"
        if path.exists():
            return path.read_text()
    return None


class BagRecorder:
    """Write serialized (CDR) ROS 2 messages into a rosbag2 bag with MCAP storage.

        with BagRecorder(run_dir / "bag") as bag:
            bag.add_topic("/flow_reactor/state", "aichemist_interfaces/msg/FlowReactorState")
            bag.write("/flow_reactor/state", stamp_ns, raw_cdr_bytes)   # from a raw subscription
    """

    def __init__(self, path: str | pathlib.Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = pathlib.Path(path)
        if self.path.exists():
            raise ConfigurationError(f"bag {self.path} already exists; not overwriting a recording",
                                     problems=[{"field": "path", "value": str(self.path), "limit": "new path",
                                                "message": "exists"}])
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._open = False
        self.count = 0

    def open(self) -> "BagRecorder":
        self._writer.open()
        self._open = True
        return self

    def __enter__(self) -> "BagRecorder":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` with its type (``pkg/msg/Name``)."""
        with self._lock:
            if topic in self._connections:
                return
            self._register_with_dependencies(msgtype)
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)

    def _register_with_dependencies(self, msgtype: str) -> None:
        from rosbags.typesys import get_types_from_msg

        pending = [msgtype]
        while pending:
            t = pending.pop()
            if t in self.typestore.fielddefs:
                continue
            text = _msgdef_from_share(t)
            if text is None:
                raise ConfigurationError(f"no message definition for {t}")
            types = get_types_from_msg(text, t)
            missing = []
            for _name, fields in types.items():
                for _fname, (kind, spec) in fields[1]:
                    for ref in _refs(kind, spec):
                        if ref not in self.typestore.fielddefs and ref != t:
                            missing.append(ref)
            if missing:
                pending.append(t)
                pending.extend(missing)
                if len(pending) > 100:
                    raise ConfigurationError(f"cannot resolve message definitions for {msgtype}")
                continue
            self.typestore.register(types)

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        with self._lock:
            if not self._open:
                raise ConfigurationError("bag is not open")
            self._writer.write(self._connections[topic], int(timestamp_ns), data)
            self.count += 1

    def write_message(self, topic: str, timestamp_ns: int, message: Any) -> None:
        """Serialize a rosbags message object (tests, offline conversion) and write it."""
        msgtype = self._connections[topic].msgtype
        self.write(topic, timestamp_ns, self.typestore.serialize_cdr(message, msgtype))

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._writer.close()
                self._open = False


def _refs(kind: Any, spec: Any) -> list[str]:
    """Message type names referenced by a rosbags field definition."""
    from rosbags.typesys.base import Nodetype

    out: list[str] = []
    if kind == Nodetype.NAME:
        out.append(spec)
    elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        inner_kind, inner_spec = spec[0]
        out += _refs(inner_kind, inner_spec)
    return out


def read_bag(path: str | pathlib.Path) -> list[tuple[str, str, int, Any]]:
    """(topic, msgtype, timestamp ns, decoded message) for every message of a rosbag2 bag."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out = []
    with AnyReader([pathlib.Path(path)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        for conn, stamp, raw in reader.messages():
            out.append((conn.topic, conn.msgtype, stamp, reader.deserialize(raw, conn.msgtype)))
    return out
