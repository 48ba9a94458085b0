"""MuJoCo model (MJCF) of the lab and the robot, generated from the one lab description.

The lab (benches, obstacles, walls, racks, fiducials, vials, a fixed camera per station) comes
from ``sim/world/lab.yaml``; the robot comes from the URDF that ``manipulation.robot_spec``
generates (converted body by body, so MuJoCo's kinematics are the URDF's). AprilTag 36h11
textures are rendered with OpenCV into ``asset_dir`` and mapped onto flat, non-colliding planes.

Collision classes (contype/conaffinity bits): static world 1/0, vials 2/7, robot 4/0. So vials
touch the world, each other and the robot's fingers; the robot (driven kinematically by the twin)
never fights the world or itself inside MuJoCo: the planner keeps it clear.
"""

from __future__ import annotations

import pathlib
import tempfile
import xml.etree.ElementTree as ET

import numpy as np

from manipulation import robot_spec
from manipulation.layout import LabLayout, Station, load_layout, rpy_matrix

WORLD_BITS = 'contype="1" conaffinity="0"'
VIAL_BITS = 'contype="2" conaffinity="7"'
ROBOT_BITS = 'contype="4" conaffinity="0"'
NO_CONTACT = 'contype="0" conaffinity="0"'
TAG_WHITE_BORDER_CELLS = 1
# The twin drives the robot's joints kinematically; a huge armature keeps contact forces
# from accelerating them between two writes (small armature made the solver unstable).
ROBOT_ARMATURE = 1.0e4
TAG_BLACK_CELLS = 8  # tag36h11: 6x6 data bits inside a one-cell black border


def _v(values) -> str:
    return " ".join(f"{float(x):.9g}" for x in values)


def mat_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix -> MuJoCo quaternion (w, x, y, z)."""
    import mujoco

    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(r, dtype=float).reshape(9))
    return q


def rpy_quat(rpy) -> np.ndarray:
    return mat_to_quat(rpy_matrix(rpy))


def tag_texture_path(asset_dir: pathlib.Path, tag_id: int) -> pathlib.Path:
    return asset_dir / f"tag36h11_{tag_id:03d}.png"


def write_tag_texture(asset_dir: pathlib.Path, tag_id: int, px_per_cell: int = 16) -> pathlib.Path:
    import cv2

    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_APRILTAG_36h11)
    black = cv2.aruco.generateImageMarker(dictionary, tag_id, TAG_BLACK_CELLS * px_per_cell, borderBits=1)
    pad = TAG_WHITE_BORDER_CELLS * px_per_cell
    img = cv2.copyMakeBorder(black, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    path = tag_texture_path(asset_dir, tag_id)
    asset_dir.mkdir(parents=True, exist_ok=True)
    # unflipped: a render detects as this id with the marker frame equal to the fiducial site (tested)
    cv2.imwrite(str(path), img)
    return path


def tag_outer_size_m(black_side_m: float) -> float:
    return black_side_m * (TAG_BLACK_CELLS + 2 * TAG_WHITE_BORDER_CELLS) / TAG_BLACK_CELLS


# --- robot: URDF -> MJCF bodies ------------------------------------------------------------
def _urdf_origin(el: ET.Element | None) -> tuple[np.ndarray, np.ndarray]:
    if el is None:
        return np.zeros(3), np.zeros(3)
    xyz = np.array([float(x) for x in el.get("xyz", "0 0 0").split()])
    rpy = np.array([float(x) for x in el.get("rpy", "0 0 0").split()])
    return xyz, rpy


def _geom_xml(link: str, idx: int, vis: ET.Element, rgba: str) -> str:
    xyz, rpy = _urdf_origin(vis.find("origin"))
    g = vis.find("geometry")[0]
    pos_quat = f'pos="{_v(xyz)}" quat="{_v(rpy_quat(rpy))}"'
    if g.tag == "box":
        size = [float(x) / 2 for x in g.get("size").split()]
        shape = f'type="box" size="{_v(size)}"'
    elif g.tag == "cylinder":
        shape = f'type="cylinder" size="{_v([float(g.get("radius")), float(g.get("length")) / 2])}"'
    elif g.tag == "sphere":
        shape = f'type="sphere" size="{_v([float(g.get("radius"))])}"'
    else:
        raise ValueError(f"unsupported URDF geometry {g.tag} on {link}")
    return f'<geom name="{link}_geom{idx}" {shape} {pos_quat} rgba="{rgba}" {ROBOT_BITS} group="1"/>'


def robot_bodies_xml(urdf: str | None = None) -> str:
    """The robot as nested MJCF bodies under a planar base (base_x, base_y, base_yaw joints)."""
    root = ET.fromstring(urdf or robot_spec.urdf_text())
    colors = {m.get("name"): m.find("color").get("rgba") for m in root.findall("material") if m.find("color") is not None}
    links = {ln.get("name"): ln for ln in root.findall("link")}
    children: dict[str, list[ET.Element]] = {}
    for j in root.findall("joint"):
        children.setdefault(j.find("parent").get("link"), []).append(j)

    def body(link_name: str, joint: ET.Element | None, indent: str) -> list[str]:
        link = links[link_name]
        if joint is None:
            head = f'{indent}<body name="{link_name}" pos="0 0 0" gravcomp="1">'
        else:
            xyz, rpy = _urdf_origin(joint.find("origin"))
            head = f'{indent}<body name="{link_name}" pos="{_v(xyz)}" quat="{_v(rpy_quat(rpy))}" gravcomp="1">'
        out = [head]
        if joint is not None and joint.get("type") in ("revolute", "prismatic"):
            axis = joint.find("axis").get("xyz")
            lim = joint.find("limit")
            kind = "hinge" if joint.get("type") == "revolute" else "slide"
            out.append(f'{indent}  <joint name="{joint.get("name")}" type="{kind}" axis="{axis}" '
                       f'range="{lim.get("lower")} {lim.get("upper")}" damping="1" armature="{ROBOT_ARMATURE}"/>')
        inertial = link.find("inertial")
        if inertial is not None:
            mass = float(inertial.find("mass").get("value"))
            out.append(f'{indent}  <inertial pos="0 0 0" mass="{mass:.6g}" diaginertia="0.01 0.01 0.01"/>')
        elif joint is not None:
            out.append(f'{indent}  <site name="{link_name}" size="0.005" rgba="1 0 0 0.5" group="3"/>')
        for i, vis in enumerate(link.findall("visual")):
            mat = vis.find("material")
            rgba = colors.get(mat.get("name") if mat is not None else "", "0.6 0.6 0.6 1")
            out.append(indent + "  " + _geom_xml(link_name, i, vis, rgba))
        if link_name == robot_spec.WRIST_CAMERA_OPTICAL_FRAME:
            # MuJoCo cameras look along -z with y up; the optical frame looks along +z with y down
            out.append(f'{indent}  <camera name="wrist_camera" quat="0 1 0 0" fovy="58"/>')
        for child_joint in children.get(link_name, []):
            out.extend(body(child_joint.find("child").get("link"), child_joint, indent + "  "))
        out.append(f"{indent}</body>")
        return out

    lines = [f'    <body name="robot" pos="0 0 0">',
             f'      <joint name="base_x" armature="{ROBOT_ARMATURE}" type="slide" axis="1 0 0" damping="10"/>',
             f'      <joint name="base_y" armature="{ROBOT_ARMATURE}" type="slide" axis="0 1 0" damping="10"/>',
             f'      <joint name="base_yaw" armature="{ROBOT_ARMATURE}" type="hinge" axis="0 0 1" damping="10"/>',
             '      <inertial pos="0 0 0.2" mass="60" diaginertia="3 3 3"/>']
    lines += body(robot_spec.BASE_FRAME, None, "      ")
    lines.append("    </body>")
    return "\n".join(lines)


# --- lab -------------------------------------------------------------------------------------
def _box_geom(name: str, center, size, yaw: float, rgba, bits: str) -> str:
    return (f'<geom name="{name}" type="box" pos="{_v(center)}" size="{_v(np.asarray(size) / 2)}" '
            f'quat="{_v(rpy_quat((0, 0, yaw)))}" rgba="{_v(rgba)}" {bits}/>')


def rack_plate(station: Station) -> tuple[np.ndarray, np.ndarray]:
    """(centre in station frame, full size) of the station's rack plate."""
    rack = station.rack
    assert rack is not None
    x0, y0, _ = rack.first_slot_xyz_m
    length_x = (rack.rows - 1) * rack.pitch_m + rack.pitch_m
    length_y = (rack.cols - 1) * rack.pitch_m + rack.pitch_m
    centre = np.array([x0 + (rack.rows - 1) * rack.pitch_m / 2, y0 - (rack.cols - 1) * rack.pitch_m / 2,
                       rack.plate_thickness_m / 2])
    return centre, np.array([length_x, length_y, rack.plate_thickness_m])


def _station_xml(st: Station, asset_dir: pathlib.Path) -> tuple[list[str], list[str]]:
    assets, bodies = [], []
    tmat = st.matrix()
    name = st.name
    bodies.append(f'    <body name="{name}" pos="{_v(tmat[:3, 3])}" quat="{_v(mat_to_quat(tmat[:3, :3]))}">')
    bodies.append(f'      <site name="{name}_frame" size="0.01" rgba="0 1 0 0.5" group="3"/>')
    if st.rack is not None:
        centre, size = rack_plate(st)
        bodies.append("      " + _box_geom(f"{name}_rack", centre, size, 0.0, (0.95, 0.95, 0.95, 1), WORLD_BITS))
    tex = write_tag_texture(asset_dir, st.fiducial.id)
    assets.append(f'    <texture name="tag_{st.fiducial.id}" type="2d" file="{tex}"/>')
    assets.append(f'    <material name="tag_{st.fiducial.id}" texture="tag_{st.fiducial.id}" specular="0" shininess="0"/>')
    half = tag_outer_size_m(st.fiducial.size_m) / 2
    fq = rpy_quat(st.fiducial.rpy_in_station_rad)
    bodies.append(f'      <geom name="{name}_fiducial" type="plane" size="{_v([half, half, 0.001])}" '
                  f'pos="{_v(st.fiducial.xyz_in_station_m)}" quat="{_v(fq)}" material="tag_{st.fiducial.id}" '
                  f'{NO_CONTACT} group="0"/>')
    bodies.append(f'      <site name="{name}_fiducial" pos="{_v(st.fiducial.xyz_in_station_m)}" quat="{_v(fq)}" '
                  f'size="0.005" group="3"/>')
    look_at = rack_plate(st)[0] if st.rack is not None else np.array(st.fiducial.xyz_in_station_m)
    cam_pos = np.array([look_at[0], look_at[1], st.camera_height_m])
    # looks straight down; image up = station +x (into the bench)
    bodies.append(f'      <camera name="{name}_camera" pos="{_v(cam_pos)}" xyaxes="0 -1 0 1 0 0" fovy="60"/>')
    bodies.append("    </body>")
    return assets, bodies


def vial_initial_positions(layout: LabLayout) -> dict[str, np.ndarray]:
    """vial id -> world position of the vial's centre at start."""
    out = {}
    for key, vial_id in layout.initial_vials.items():
        station, _, slot = key.partition("/")
        bottom = layout.station(station).slot_world_xyz(slot)
        out[vial_id] = bottom + np.array([0.0, 0.0, layout.vial.height_m / 2 + 0.0005])
    return out


def build_mjcf(layout: LabLayout | None = None, asset_dir: str | pathlib.Path | None = None,
               *, with_robot: bool = True, timestep_s: float = 0.002) -> str:
    """MJCF text of the lab (and the robot). Textures are written under ``asset_dir``."""
    layout = layout or load_layout()
    asset_dir = pathlib.Path(asset_dir or tempfile.mkdtemp(prefix="aichemist-mjcf-"))
    room = layout.room_size_m
    assets = ['    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.55 0.55 0.55" '
              'rgb2="0.5 0.5 0.5" width="256" height="256"/>',
              '    <material name="floor" texture="floor_tex" texrepeat="8 6" texuniform="false"/>']
    world = [f'    <geom name="floor" type="plane" pos="{_v([room[0] / 2, room[1] / 2, 0])}" '
             f'size="{_v([room[0] / 2, room[1] / 2, 0.05])}" material="floor" {WORLD_BITS}/>',
             f'    <light name="ceiling_1" pos="{_v([room[0] * 0.3, room[1] / 2, room[2] - 0.2])}" dir="0 0 -1" '
             'diffuse="0.6 0.6 0.6" castshadow="false"/>',
             f'    <light name="ceiling_2" pos="{_v([room[0] * 0.7, room[1] / 2, room[2] - 0.2])}" dir="0 0 -1" '
             'diffuse="0.6 0.6 0.6" castshadow="false"/>']
    for box in layout.all_boxes():
        world.append("    " + _box_geom(box.name, box.center_m, box.size_m, box.yaw_rad, box.rgba, WORLD_BITS))
    for st in layout.stations:
        a, b = _station_xml(st, asset_dir)
        assets += a
        world += b
    vial = layout.vial
    for vial_id, pos in vial_initial_positions(layout).items():
        world.append(f'    <body name="vial_{vial_id}" pos="{_v(pos)}">')
        world.append("      <freejoint/>")
        world.append(f'      <geom name="vial_{vial_id}" type="cylinder" size="{_v([vial.diameter_m / 2, vial.height_m / 2])}" '
                     f'mass="{vial.mass_kg:.6g}" rgba="0.8 0.9 1 0.6" friction="0.8 0.01 0.001" {VIAL_BITS} '
                     'condim="4" solref="0.004 1"/>')
        world.append(f'      <geom name="vial_{vial_id}_cap" type="cylinder" size="{_v([vial.diameter_m / 2 + 0.0005, 0.003])}" '
                     f'pos="0 0 {vial.height_m / 2 - 0.003:.6g}" mass="0.0005" rgba="0.1 0.2 0.7 1" {NO_CONTACT}/>')
        world.append("    </body>")
    if with_robot:
        world.append(robot_bodies_xml())
    lines = [f'<mujoco model="{layout.name}">',
             f'  <option timestep="{timestep_s}" integrator="implicitfast" cone="elliptic"/>',
             '  <visual><global offwidth="1280" offheight="960"/><quality shadowsize="0"/></visual>',
             "  <asset>", *assets, "  </asset>",
             "  <worldbody>", *world, "  </worldbody>"]
    lines.append("</mujoco>")
    return "\n".join(lines) + "\n"


def load_model(layout: LabLayout | None = None, asset_dir: str | pathlib.Path | None = None, **kw):
    """Compiled ``mujoco.MjModel`` of the lab (convenience for the twin and the cameras)."""
    import mujoco

    return mujoco.MjModel.from_xml_string(build_mjcf(layout, asset_dir, **kw))


def station_camera_names(layout: LabLayout | None = None) -> list[str]:
    layout = layout or load_layout()
    return [f"{s.name}_camera" for s in layout.stations]


__all__ = ["build_mjcf", "load_model", "robot_bodies_xml", "vial_initial_positions", "station_camera_names",
           "tag_outer_size_m", "write_tag_texture"]
