"""The robot twin's world on disk, so that it outlives manipulator_node's process.

One small JSON file (``RobotWorldState``): the base's true pose, every vial that is not in the
gripper (the rack slot it stands in, or None, and its exact free-body pose), and the vial in the
gripper with the slot it was picked from. ``save_world_state`` writes it atomically (a temporary
file next to it, flushed and fsynced, then ``os.replace``), so a process killed while writing
leaves the previous file or the new one, never half of one. ``load_world_state`` returns None
when there is no file and raises ``ConfigurationError`` (naming the file and the field) when the
file cannot be used; ``RobotWorldState.check`` compares it with the lab layout.

``RobotTwin.world_state()`` builds one, ``RobotTwin.restore_world()`` puts the twin back into it.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from aichemist.errors import ConfigurationError
from aichemist.params import validate
from manipulation.layout import LabLayout, Pose2D

FORMAT = 1


class VialState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: Optional[str] = Field(None, description="'<station>/<slot>' it stands in; None = elsewhere (fallen)")
    pose: tuple[float, float, float, float, float, float, float] = Field(
        description="free-body pose in the world: x, y, z (m), quaternion w, x, y, z")


class RobotWorldState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = FORMAT
    layout: str = Field(description="name of the lab layout the state belongs to")
    sim_time_s: float = Field(0.0, description="the twin's time when saved (information only)")
    base_pose: Pose2D = Field(description="the base's true pose in the map")
    vials: dict[str, VialState] = Field(default_factory=dict, description="every vial not in the gripper")
    held_vial: Optional[str] = None
    held_from: Optional[str] = Field(None, description="'<station>/<slot>' the held vial was picked from")

    def slots(self) -> dict[str, str]:
        """'<station>/<slot>' -> vial id of the vials standing in a slot (the held vial excluded)."""
        return {v.slot: vial for vial, v in self.vials.items() if v.slot is not None}

    def check(self, layout: LabLayout, vial_ids: list[str], *, source: str = "robot world state") -> None:
        """Raise ConfigurationError unless this state describes ``layout``'s vials: each vial once,
        in a slot of the layout, no two in one slot, a held vial with a free slot to go back to."""
        problems: list[str] = []
        if self.layout != layout.name:
            problems.append(f"layout is '{self.layout}', the node's layout is '{layout.name}'")
        keys = {f"{st.name}/{slot}" for st in layout.stations if st.rack is not None for slot in st.rack.slot_names()}
        listed = list(self.vials) + ([self.held_vial] if self.held_vial is not None else [])
        unknown = sorted(set(listed) - set(vial_ids))
        missing = sorted(set(vial_ids) - set(listed))
        if unknown:
            problems.append(f"unknown vials {unknown}")
        if missing:
            problems.append(f"vials {missing} are missing")
        if self.held_vial in self.vials:
            problems.append(f"vial '{self.held_vial}' is both held and listed in vials")
        used: dict[str, str] = {}
        for vial, v in self.vials.items():
            if v.slot is None:
                continue
            if v.slot not in keys:
                problems.append(f"vials.{vial}.slot '{v.slot}' is not a rack slot of the layout")
            elif v.slot in used:
                problems.append(f"vials '{used[v.slot]}' and '{vial}' are both in slot {v.slot}")
            used[v.slot] = vial
        if (self.held_vial is None) != (self.held_from is None):
            problems.append("held_vial and held_from must be given together")
        elif self.held_from is not None:
            if self.held_from not in keys:
                problems.append(f"held_from '{self.held_from}' is not a rack slot of the layout")
            elif self.held_from in used:
                problems.append(f"held_from {self.held_from} is occupied by vial '{used[self.held_from]}'")
        if problems:
            raise ConfigurationError(f"{source}: " + "; ".join(problems) + " (delete the file to start the robot "
                                     "from the layout's initial vials)")


def save_world_state(path: str | os.PathLike[str], state: RobotWorldState) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, os.replace)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(state.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous file stays as it was
        raise


def load_world_state(path: str | os.PathLike[str]) -> RobotWorldState | None:
    """The state saved at ``path``; None when there is no file; ConfigurationError when it is unusable."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"robot world state {path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"robot world state {path} is not valid JSON ({exc}); delete it to start the "
                                 "robot from the layout's initial vials") from None
    return validate(RobotWorldState, data, what=f"robot world state {path}", error=ConfigurationError)


__all__ = ["RobotWorldState", "VialState", "load_world_state", "save_world_state"]
