"""The lab profile: what the planner knows about one lab.

Resources (robot, reactor, HPLC, stations), the reagent inventory (SMILES, volume, stock
concentration), the reactor's feeds and process window, device limits and step durations. Loaded
from ``config/lab/<name>.yaml``; the planner never talks to a device to learn these.
"""

from __future__ import annotations

import pathlib
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from aichemist.errors import ConfigurationError, NotFoundError
from aichemist.params import Params, validate_config
from planner.tasks import LabLimits

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "config" / "lab"


class Resource(Params):
    """Something only one step (``capacity``) can use at a time."""

    name: str
    kind: Literal["robot", "reactor", "instrument", "station"]
    capacity: int = Field(default=1, ge=1, le=64)


class Reagent(Params):
    name: str
    smiles: str = Field(description="structure of the (main) component, RDKit-parsable")
    volume_ml: float = Field(ge=0, description="volume on hand")
    conc_m: float | None = Field(default=None, gt=0, description="stock concentration, mol/L (None: neat)")
    location: str = ""
    hazard_classes: list[str] = Field(default_factory=list,
                                      description="declared hazard classes, added to those found by SMARTS")


class Feed(Params):
    """One pump line of the flow reactor."""

    reagent: str
    pump: str
    max_flow_ml_min: float = Field(gt=0)
    min_flow_ml_min: float = Field(default=0.0, ge=0, description="smallest flow the pump meters accurately")


class ReactorProfile(Params):
    volume_ml: float = Field(gt=0, le=1000)
    dfnb: Feed
    pyrrolidine: Feed
    solvent: Feed
    max_temp_c: float = 150.0
    min_temp_c: float = 0.0
    #: residence times to wait before the outlet is at steady state, then to collect, then to flush
    steady_state_residence_times: float = Field(default=3.0, gt=0)
    collect_residence_times: float = Field(default=1.0, ge=0)
    flush_residence_times: float = Field(default=2.0, ge=0)
    heat_up_s: float = Field(default=120.0, ge=0, description="allowance to reach the temperature setpoint")
    prime_volume_ml: float = Field(default=1.0, ge=0, description="dead volume primed per feed per experiment")


class Durations(Params):
    """Nominal step durations, seconds (the scheduler's estimates; the executor times out at
    ``timeout_factor`` times these)."""

    move_vial_s: float = Field(default=90.0, gt=0)
    measure_s: float = Field(default=600.0, gt=0)
    dispense_s: float = Field(default=60.0, gt=0)
    timeout_factor: float = Field(default=3.0, ge=1.0)


class Station(Params):
    name: str
    resource: str = Field(description="the resource that owns the station (reactor, hplc, ...)")
    vial_slots: int = Field(default=1, ge=0)
    layout_station: str = Field(default="", description="the robot's name for the station (its lab layout); "
                                                         "'' = the same name")
    #: slot -> the device's name for that position (the flow reactor's collection vial, the HPLC
    #: autosampler's vial); the robot addresses slots ("A1": row letter, column number)
    slots: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _slots_fit(self) -> "Station":
        if self.slots and len(self.slots) != self.vial_slots:
            raise ValueError(f"station {self.name}: {len(self.slots)} slots named for vial_slots={self.vial_slots}")
        return self

    @property
    def robot_name(self) -> str:
        return self.layout_station or self.name


class LabProfile(Params):
    name: str
    limits: LabLimits = Field(default_factory=LabLimits)
    reactor: ReactorProfile
    resources: list[Resource]
    stations: list[Station]
    inventory: list[Reagent]
    durations: Durations = Field(default_factory=Durations)
    #: how an experiment is analysed: inline detector only (run_flow); the HPLC measures the
    #: collected vial, which reaches its autosampler without the robot (run_flow, measure); or the
    #: robot carries vials (fetch_vial, run_flow, move_vial, measure)
    analysis: Literal["inline", "hplc", "hplc_robot"] = "hplc_robot"
    robot: str = "robot"
    #: contact on the lab's ORD records (ord-schema requires an email for record_created)
    records_contact_email: str = "lab@example.org"
    reactor_resource: str = "reactor"
    hplc: str = "hplc"
    reactor_station: str = "reactor_outlet"
    hplc_station: str = "hplc_autosampler"
    rack_station: str = "vial_rack"   # where empty and measured vials wait between experiments
    #: the vials in the lab when the planner first starts, "station/slot" -> vial id (afterwards the
    #: planner's journal knows where they are)
    vials: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "LabProfile":
        names = {r.name for r in self.resources}
        problems = []
        for what, value in (("robot", self.robot), ("reactor_resource", self.reactor_resource),
                            ("hplc", self.hplc)):
            if value not in names:
                problems.append(f"{what}={value!r} is not a resource ({sorted(names)})")
        stations = {s.name for s in self.stations}
        for s in self.stations:
            if s.resource not in names:
                problems.append(f"station {s.name!r}: resource {s.resource!r} is not a resource")
        for what, value in (("reactor_station", self.reactor_station), ("hplc_station", self.hplc_station),
                            ("rack_station", self.rack_station)):
            if value not in stations:
                problems.append(f"{what}={value!r} is not a station ({sorted(stations)})")
        reagents = {r.name for r in self.inventory}
        for feed_name in ("dfnb", "pyrrolidine", "solvent"):
            feed: Feed = getattr(self.reactor, feed_name)
            if feed.reagent not in reagents:
                problems.append(f"reactor.{feed_name}.reagent={feed.reagent!r} is not in the inventory")
        by_name = {s.name: s for s in self.stations}
        for where, vial in self.vials.items():
            station, _, slot = where.partition("/")
            if station not in by_name or slot not in by_name[station].slots:
                problems.append(f"vials: {where!r} ({vial}) is not a named slot of a station")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def vial_tracker_slots(self) -> dict[str, list[str]]:
        """station -> its named slots (the stations the robot moves vials between)."""
        return {s.name: list(s.slots) for s in self.stations if s.slots}

    def reagent(self, name: str) -> Reagent:
        for r in self.inventory:
            if r.name == name:
                return r
        raise NotFoundError(f"reagent {name!r} is not in the inventory of lab {self.name!r}")

    def station(self, name: str) -> Station:
        for s in self.stations:
            if s.name == name:
                return s
        raise NotFoundError(f"station {name!r} is not in lab {self.name!r}")

    def resource_names(self) -> list[str]:
        return [r.name for r in self.resources]


def load_lab(name_or_path: str | pathlib.Path = "default") -> LabProfile:
    """Load ``config/lab/<name>.yaml`` (or a path to a YAML file)."""
    path = pathlib.Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigurationError(f"lab profile {str(path)!r} does not exist",
                                 problems=[{"field": "lab", "value": str(path), "limit": "existing file",
                                            "message": "not found"}])
    data: Any = yaml.safe_load(path.read_text())
    return validate_config(LabProfile, data, what=f"lab profile {path.name}")
