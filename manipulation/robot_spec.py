"""The mobile manipulator's description, written once: URDF and SRDF are generated from here.

Robot: an omnidirectional (mecanum) base carrying a Universal Robots UR5e arm, a parallel
gripper with an 85 mm stroke (Robotiq 2F-85 class) and a wrist RGB-D camera.

UR5e kinematics are Universal Robots' published standard DH parameters
(d1 = 0.1625, a2 = -0.425, a3 = -0.3922, d4 = 0.1333, d5 = 0.0997, d6 = 0.0996 m;
alpha = pi/2, 0, 0, pi/2, -pi/2, 0). Each URDF joint origin is the DH transform
Tz(d) Tx(a) Rx(alpha) of the previous joint, so the URDF's forward kinematics equal the DH
model exactly (checked by tests against the DH product). Joint ranges use the "limited"
+-pi option that ur_description offers; the speed limit is UR's 180 deg/s for every joint.
Collision geometry is made of primitives (cylinders, boxes) that cover the real links.

The generated files live in ros2_ws/src/aichemist_description (``write_description_files``);
a unit test checks that the committed files equal what this module generates.
"""

from __future__ import annotations

import itertools
import math
import pathlib
from dataclasses import dataclass

PI = math.pi

# UR5e standard DH (Universal Robots, "DH parameters for calculations of kinematics and dynamics").
UR5E_DH_D_M = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
UR5E_DH_A_M = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
UR5E_DH_ALPHA_RAD = (PI / 2, 0.0, 0.0, PI / 2, -PI / 2, 0.0)
UR5E_MAX_JOINT_SPEED_RAD_S = PI  # 180 deg/s on every joint
UR5E_LINK_MASS_KG = (3.761, 8.058, 2.846, 1.37, 1.3, 0.365)

ARM_JOINTS = ("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint",
              "wrist_1_joint", "wrist_2_joint", "wrist_3_joint")
ARM_LINKS = ("shoulder_link", "upper_arm_link", "forearm_link",
             "wrist_1_link", "wrist_2_link", "wrist_3_link")
FINGER_JOINTS = ("finger_left_joint", "finger_right_joint")
BASE_FRAME = "base_footprint"
TCP_FRAME = "tcp"
WRIST_CAMERA_OPTICAL_FRAME = "wrist_camera_optical_frame"


@dataclass(frozen=True)
class RobotSpec:
    base_size_m: tuple[float, float, float] = (0.60, 0.50, 0.50)   # omnidirectional base box
    arm_mount_xyz_m: tuple[float, float, float] = (0.18, 0.0, 0.50)  # arm base on the base's top
    gripper_body_size_m: tuple[float, float, float] = (0.06, 0.12, 0.10)
    finger_size_m: tuple[float, float, float] = (0.02, 0.01, 0.05)
    tcp_offset_m: float = 0.145          # flange -> point between the fingertips
    gripper_max_opening_m: float = 0.085
    wrist_camera_xyz_m: tuple[float, float, float] = (0.06, 0.0, 0.03)  # on the gripper body
    joint_lower_rad: tuple[float, ...] = (-PI, -PI, -PI, -PI, -PI, -PI)
    joint_upper_rad: tuple[float, ...] = (PI, PI, PI, PI, PI, PI)
    joint_speed_rad_s: tuple[float, ...] = (UR5E_MAX_JOINT_SPEED_RAD_S,) * 6
    joint_accel_rad_s2: tuple[float, ...] = (4.0,) * 6   # conservative lab setting
    # arm folded over the base for driving; "ready" looks at the bench in front
    stow_q: tuple[float, ...] = (0.83, -2.36, 1.0, -0.21, -PI / 2, -0.74)
    ready_q: tuple[float, ...] = (-0.59, -1.86, 0.88, -0.59, -PI / 2, -2.16)
    link_radius_m: tuple[float, ...] = (0.065, 0.060, 0.050, 0.045, 0.045, 0.040)

    @property
    def base_radius_m(self) -> float:
        """Radius of the circle that covers the base footprint (navigation clearance)."""
        return math.hypot(self.base_size_m[0] / 2, self.base_size_m[1] / 2)


DEFAULT_SPEC = RobotSpec()


def _f(x: float) -> str:
    return f"{x:.10g}"


def _xyz(v) -> str:
    return " ".join(_f(float(x)) for x in v)


def _cylinder_between(p0, p1, radius: float) -> tuple[str, str, str]:
    """(xyz, rpy, geometry xml) of a cylinder whose axis goes from p0 to p1."""
    dx, dy, dz = (p1[i] - p0[i] for i in range(3))
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    mid = [(p0[i] + p1[i]) / 2 for i in range(3)]
    # cylinder axis is z: rotate z onto the direction (pitch about y, then yaw about z)
    pitch = math.atan2(math.hypot(dx, dy), dz)
    yaw = math.atan2(dy, dx)
    return _xyz(mid), _xyz((0.0, pitch, yaw)), f'<cylinder radius="{_f(radius)}" length="{_f(length)}"/>'


def _link(name: str, shapes: list[tuple[str, str, str]], mass: float, material: str = "grey") -> str:
    body = [f'  <link name="{name}">']
    if mass > 0:
        body.append(f'    <inertial><origin xyz="0 0 0"/><mass value="{_f(mass)}"/>'
                    f'<inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial>')
    for xyz, rpy, geom in shapes:
        origin = f'<origin xyz="{xyz}" rpy="{rpy}"/>'
        body.append(f'    <visual>{origin}<geometry>{geom}</geometry><material name="{material}"/></visual>')
        body.append(f'    <collision>{origin}<geometry>{geom}</geometry></collision>')
    body.append("  </link>")
    return "\n".join(body)


def _frame(name: str) -> str:
    return f'  <link name="{name}"/>'


def _fixed(name: str, parent: str, child: str, xyz, rpy=(0.0, 0.0, 0.0)) -> str:
    return (f'  <joint name="{name}" type="fixed"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="{_xyz(xyz)}" rpy="{_xyz(rpy)}"/></joint>')


def arm_link_segments(spec: RobotSpec = DEFAULT_SPEC) -> list[list[tuple[tuple, tuple]]]:
    """Per arm link, the segments (in the link frame) its collision cylinders cover."""
    d, a = UR5E_DH_D_M, UR5E_DH_A_M
    segs: list[list[tuple[tuple, tuple]]] = []
    for i in range(6):
        # link i spans Tz(d_i) Tx(a_i): up its joint axis by d_i, then along x by a_i
        pieces = []
        if abs(d[i]) > 1e-9:
            pieces.append(((0.0, 0.0, 0.0), (0.0, 0.0, d[i])))
        if abs(a[i]) > 1e-9:
            pieces.append(((0.0, 0.0, d[i]), (a[i], 0.0, d[i])))
        segs.append(pieces)
    return segs


def urdf_text(spec: RobotSpec = DEFAULT_SPEC) -> str:
    bx, by, bz = spec.base_size_m
    parts = ['<?xml version="1.0"?>',
             "<!-- GENERATED by manipulation/robot_spec.py: edit that file, then run",
             "     `python -m manipulation.robot_spec write`. UR5e arm (standard DH), omnidirectional base,",
             "     85 mm parallel gripper, wrist RGB-D camera. -->",
             '<robot name="aichemist_mobile_manipulator">',
             '  <material name="grey"><color rgba="0.6 0.6 0.62 1"/></material>',
             '  <material name="blue"><color rgba="0.2 0.35 0.7 1"/></material>',
             '  <material name="black"><color rgba="0.1 0.1 0.1 1"/></material>',
             _frame(BASE_FRAME),
             _link("base_link", [(_xyz((0, 0, bz / 2)), "0 0 0", f'<box size="{_xyz((bx, by, bz))}"/>')],
                   60.0, "blue"),
             _fixed("base_joint", BASE_FRAME, "base_link", (0, 0, 0)),
             _link("arm_base_link", [(_xyz((0, 0, 0.01)), "0 0 0",
                                      f'<cylinder radius="0.075" length="0.02"/>')], 1.0),
             # yaw pi: UR's DH x axis points backwards, so pan = 0 then reaches forward over the bench
             _fixed("arm_mount_joint", "base_link", "arm_base_link", spec.arm_mount_xyz_m, (0.0, 0.0, PI))]
    parent = "arm_base_link"
    origin_xyz, origin_rpy = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    segs = arm_link_segments(spec)
    for i, (joint, link) in enumerate(zip(ARM_JOINTS, ARM_LINKS)):
        shapes = [_cylinder_between(p0, p1, spec.link_radius_m[i]) for p0, p1 in segs[i]]
        parts.append(_link(link, shapes, UR5E_LINK_MASS_KG[i]))
        parts.append(
            f'  <joint name="{joint}" type="revolute"><parent link="{parent}"/><child link="{link}"/>'
            f'<origin xyz="{_xyz(origin_xyz)}" rpy="{_xyz(origin_rpy)}"/><axis xyz="0 0 1"/>'
            f'<limit lower="{_f(spec.joint_lower_rad[i])}" upper="{_f(spec.joint_upper_rad[i])}" '
            f'effort="150" velocity="{_f(spec.joint_speed_rad_s[i])}"/></joint>')
        parent = link
        origin_xyz = (UR5E_DH_A_M[i], 0.0, UR5E_DH_D_M[i])
        origin_rpy = (UR5E_DH_ALPHA_RAD[i], 0.0, 0.0)
    parts.append(_frame("flange"))
    parts.append(_fixed("flange_joint", parent, "flange", origin_xyz, origin_rpy))
    gx, gy, gz = spec.gripper_body_size_m
    parts.append(_link("gripper_base_link", [(_xyz((0, 0, gz / 2)), "0 0 0", f'<box size="{_xyz((gx, gy, gz))}"/>')],
                       0.9, "black"))
    parts.append(_fixed("gripper_mount_joint", "flange", "gripper_base_link", (0, 0, 0)))
    fx, fy, fz = spec.finger_size_m
    half_stroke = spec.gripper_max_opening_m / 2
    for side, sign in (("left", 1.0), ("right", -1.0)):
        link = f"finger_{side}_link"
        # the finger's inner face sits on the joint origin plane; the pad extends outward
        parts.append(_link(link, [(_xyz((0, sign * fy / 2, gz + fz / 2)), "0 0 0",
                                   f'<box size="{_xyz((fx, fy, fz))}"/>')], 0.05, "black"))
        mimic = '<mimic joint="finger_left_joint" multiplier="1" offset="0"/>' if side == "right" else ""
        parts.append(
            f'  <joint name="finger_{side}_joint" type="prismatic"><parent link="gripper_base_link"/>'
            f'<child link="{link}"/><origin xyz="0 0 0"/><axis xyz="0 {_f(sign)} 0"/>'
            f'<limit lower="0" upper="{_f(half_stroke)}" effort="60" velocity="0.15"/>{mimic}</joint>')
    parts.append(_frame(TCP_FRAME))
    parts.append(_fixed("tcp_joint", "gripper_base_link", TCP_FRAME, (0, 0, spec.tcp_offset_m)))
    parts.append(_link("wrist_camera_link", [(_xyz((0.0, 0, 0)), "0 0 0", '<box size="0.025 0.09 0.025"/>')],
                       0.07, "black"))
    # camera_link looks along x (REP 103); x is the tool's z so the camera looks where the gripper points
    parts.append(_fixed("wrist_camera_joint", "gripper_base_link", "wrist_camera_link",
                        spec.wrist_camera_xyz_m, (0.0, -PI / 2, 0.0)))
    parts.append(_frame(WRIST_CAMERA_OPTICAL_FRAME))
    parts.append(_fixed("wrist_camera_optical_joint", "wrist_camera_link", WRIST_CAMERA_OPTICAL_FRAME,
                        (0, 0, 0), (-PI / 2, 0.0, -PI / 2)))
    parts.append("</robot>")
    return "\n".join(parts) + "\n"


# Collision pairs that are adjacent in the chain or touch by construction.
_ADJACENT = [("base_link", "arm_base_link"), ("arm_base_link", "shoulder_link"),
             ("shoulder_link", "upper_arm_link"), ("upper_arm_link", "forearm_link"),
             ("forearm_link", "wrist_1_link"), ("wrist_1_link", "wrist_2_link"),
             ("wrist_2_link", "wrist_3_link"), ("wrist_3_link", "gripper_base_link"),
             ("gripper_base_link", "finger_left_link"), ("gripper_base_link", "finger_right_link"),
             ("gripper_base_link", "wrist_camera_link"), ("finger_left_link", "finger_right_link"),
             ("base_link", "shoulder_link")]
# Pairs that cannot collide because the kinematics keep them apart (wrist cluster, fingers).
_NEVER = [("wrist_1_link", "wrist_3_link"), ("wrist_1_link", "gripper_base_link"),
          ("wrist_2_link", "gripper_base_link"), ("wrist_3_link", "finger_left_link"),
          ("wrist_3_link", "finger_right_link"), ("wrist_3_link", "wrist_camera_link"),
          ("wrist_2_link", "wrist_camera_link"), ("wrist_camera_link", "finger_left_link"),
          ("wrist_camera_link", "finger_right_link"), ("forearm_link", "wrist_2_link"),
          ("arm_base_link", "upper_arm_link"), ("wrist_1_link", "wrist_camera_link")]


def srdf_text(spec: RobotSpec = DEFAULT_SPEC) -> str:
    def state(name: str, q) -> str:
        joints = "".join(f'<joint name="{j}" value="{_f(v)}"/>' for j, v in zip(ARM_JOINTS, q))
        return f'  <group_state name="{name}" group="arm">{joints}</group_state>'

    lines = ['<?xml version="1.0"?>',
             "<!-- GENERATED by manipulation/robot_spec.py -->",
             '<robot name="aichemist_mobile_manipulator">',
             '  <group name="arm"><chain base_link="arm_base_link" tip_link="tcp"/></group>',
             '  <group name="gripper">' + "".join(f'<joint name="{j}"/>' for j in FINGER_JOINTS) + "</group>",
             state("stow", spec.stow_q), state("ready", spec.ready_q),
             '  <end_effector name="gripper" parent_link="tcp" group="gripper" parent_group="arm"/>',
             '  <virtual_joint name="base_planar" type="planar" parent_frame="odom" child_link="base_footprint"/>']
    for a, b in _ADJACENT:
        lines.append(f'  <disable_collisions link1="{a}" link2="{b}" reason="Adjacent"/>')
    for a, b in _NEVER:
        lines.append(f'  <disable_collisions link1="{a}" link2="{b}" reason="Never"/>')
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


def disabled_collision_pairs() -> set[frozenset[str]]:
    return {frozenset(p) for p in itertools.chain(_ADJACENT, _NEVER)}


def description_dir() -> pathlib.Path:
    """Where the description package's files are: the installed ament share, else the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory  # optional

        share = pathlib.Path(get_package_share_directory("aichemist_description"))
        if (share / "urdf").is_dir():
            return share
    except Exception:  # noqa: BLE001 - not installed through ament: use the source tree
        pass
    return pathlib.Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "aichemist_description"


def write_description_files(directory: pathlib.Path | None = None) -> list[pathlib.Path]:
    directory = directory or (pathlib.Path(__file__).resolve().parents[1] / "ros2_ws" / "src"
                              / "aichemist_description")
    out = [directory / "urdf" / "aichemist_robot.urdf", directory / "srdf" / "aichemist_robot.srdf"]
    out[0].parent.mkdir(parents=True, exist_ok=True)
    out[1].parent.mkdir(parents=True, exist_ok=True)
    out[0].write_text(urdf_text())
    out[1].write_text(srdf_text())
    return out


if __name__ == "__main__":
    import sys

    if "write" in sys.argv[1:] or "--write" in sys.argv[1:]:
        for p in write_description_files():
            print(p)
    else:
        sys.stdout.write(urdf_text())
