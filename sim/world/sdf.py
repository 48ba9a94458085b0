"""Gazebo (SDFormat 1.9) world of the lab, generated from the one lab description.

Static models for benches, obstacles, walls and racks; each station's fiducial as a thin box whose
top face carries the AprilTag texture (PBR albedo map); a fixed camera sensor per station named
``<station>_camera``; vials as dynamic models. The robot is not part of the world: labs with
Gazebo spawn it from the description package's URDF (``ros_gz_sim create -file ...``), as usual.
Validated by the real parser in tests: ``ign sdf -k lab.sdf``.
"""

from __future__ import annotations

import pathlib
import tempfile
from xml.sax.saxutils import escape

import numpy as np

from manipulation.layout import Box, LabLayout, load_layout, matrix_to_rpy
from sim.world.mjcf import rack_plate, tag_outer_size_m, vial_initial_positions, write_tag_texture


def _v(values) -> str:
    return " ".join(f"{float(x):.9g}" for x in values)


def _pose(xyz, rpy=(0.0, 0.0, 0.0)) -> str:
    return f"<pose>{_v(list(xyz) + list(rpy))}</pose>"


def _material(rgba) -> str:
    return f"<material><ambient>{_v(rgba)}</ambient><diffuse>{_v(rgba)}</diffuse></material>"


def _box_model(name: str, xyz, rpy, size, rgba, *, static: bool = True, extra: str = "") -> str:
    geom = f"<geometry><box><size>{_v(size)}</size></box></geometry>"
    return (f'<model name="{escape(name)}"><static>{str(static).lower()}</static>{_pose(xyz, rpy)}'
            f'<link name="link"><collision name="collision">{geom}</collision>'
            f'<visual name="visual">{geom}{_material(rgba)}</visual>{extra}</link></model>')


def _lab_box(box: Box) -> str:
    return _box_model(box.name, box.center_m, (0.0, 0.0, box.yaw_rad), box.size_m, box.rgba)


def build_sdf(layout: LabLayout | None = None, asset_dir: str | pathlib.Path | None = None) -> str:
    layout = layout or load_layout()
    asset_dir = pathlib.Path(asset_dir or tempfile.mkdtemp(prefix="aichemist-sdf-"))
    room = layout.room_size_m
    models = [
        '<model name="ground_plane"><static>true</static><link name="link">'
        '<collision name="collision"><geometry><plane><normal>0 0 1</normal>'
        f'<size>{_v(room[:2])}</size></plane></geometry></collision>'
        '<visual name="visual"><geometry><plane><normal>0 0 1</normal>'
        f'<size>{_v(room[:2])}</size></plane></geometry>{_material((0.55, 0.55, 0.55, 1))}</visual>'
        f'</link>{_pose((room[0] / 2, room[1] / 2, 0))}</model>']
    models += [_lab_box(b) for b in layout.all_boxes()]
    for st in layout.stations:
        t = st.matrix()
        rpy = matrix_to_rpy(t[:3, :3])
        if st.rack is not None:
            centre, size = rack_plate(st)
            models.append(_box_model(f"{st.name}_rack", (t @ np.append(centre, 1))[:3], rpy, size, (0.95, 0.95, 0.95, 1)))
        tex = write_tag_texture(asset_dir, st.fiducial.id)
        side = tag_outer_size_m(st.fiducial.size_m)
        fid_pos = (t @ np.append(np.array(st.fiducial.xyz_in_station_m) - [0, 0, 0.0005], 1))[:3]
        geom = f"<geometry><box><size>{_v([side, side, 0.001])}</size></box></geometry>"
        models.append(
            f'<model name="{st.name}_fiducial_{st.fiducial.id}"><static>true</static>{_pose(fid_pos, rpy)}'
            f'<link name="link"><visual name="tag">{geom}<material><diffuse>1 1 1 1</diffuse>'
            f'<pbr><metal><albedo_map>{escape(str(tex))}</albedo_map></metal></pbr></material></visual></link></model>')
        cam_local = (rack_plate(st)[0] if st.rack is not None else np.array(st.fiducial.xyz_in_station_m)).copy()
        cam_local[2] = st.camera_height_m
        cam_pos = (t @ np.append(cam_local, 1))[:3]
        # SDF cameras look along +x: pitch down by 90 deg, yaw with the station
        models.append(
            f'<model name="{st.name}_camera"><static>true</static>{_pose(cam_pos, (0.0, np.pi / 2, rpy[2]))}'
            f'<link name="link"><sensor name="{st.name}_camera" type="camera"><always_on>true</always_on>'
            '<update_rate>5</update_rate><camera><horizontal_fov>1.0472</horizontal_fov>'
            '<image><width>640</width><height>480</height></image><clip><near>0.05</near><far>5</far></clip>'
            '</camera></sensor></link></model>')
    vial = layout.vial
    r, h, m = vial.diameter_m / 2, vial.height_m, vial.mass_kg
    ixx = m * (3 * r * r + h * h) / 12
    izz = m * r * r / 2
    for vial_id, pos in vial_initial_positions(layout).items():
        geom = f"<geometry><cylinder><radius>{r:.6g}</radius><length>{h:.6g}</length></cylinder></geometry>"
        models.append(
            f'<model name="vial_{vial_id}">{_pose(pos)}<link name="link"><inertial><mass>{m:.6g}</mass>'
            f'<inertia><ixx>{ixx:.6g}</ixx><iyy>{ixx:.6g}</iyy><izz>{izz:.6g}</izz>'
            '<ixy>0</ixy><ixz>0</ixz><iyz>0</iyz></inertia></inertial>'
            f'<collision name="collision">{geom}</collision><visual name="visual">{geom}'
            f'{_material((0.8, 0.9, 1.0, 0.6))}</visual></link></model>')
    body = "\n    ".join(models)
    return (f'<?xml version="1.0"?>\n<sdf version="1.9">\n  <world name="{escape(layout.name)}">\n'
            '    <gravity>0 0 -9.81</gravity>\n'
            '    <light name="ceiling" type="directional"><cast_shadows>false</cast_shadows>'
            '<pose>4 3 2.8 0 0 0</pose><diffuse>0.8 0.8 0.8 1</diffuse><direction>0 0 -1</direction></light>\n'
            f"    {body}\n  </world>\n</sdf>\n")


def write_sdf(path: str | pathlib.Path, layout: LabLayout | None = None) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_sdf(layout, path.parent / "textures"))
    return path
