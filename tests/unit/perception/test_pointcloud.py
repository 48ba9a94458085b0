"""Open3D point-cloud pipeline on a rendered depth image with ground truth (vials on a bench)."""

from __future__ import annotations

import numpy as np
import pytest

from perception.errors import ImageQualityError, UntrustworthyEstimate
from perception.geometry import invert, make_transform, pose_error, rpy_to_matrix
from perception.pointcloud import (PointCloudParams, cluster_objects, depth_to_points, refine_vial_pose,
                                   segment_bench)

BENCH_Z = 0.0
VIALS = {"v1": [0.0, 0.0], "v2": [0.06, 0.02], "v3": [-0.05, 0.04]}
RADIUS, HEIGHT = 0.0075, 0.045


@pytest.fixture(scope="module")
def depth_scene():
    from sim.cameras import CameraEffects, MujocoCamera
    from sim.perception_scenes import SceneBuilder, view_from

    builder = SceneBuilder(bench_height_m=BENCH_Z)
    for name, (x, y) in VIALS.items():
        builder.add_vial(name, make_transform(np.eye(3), [x, y, BENCH_Z]), RADIUS, HEIGHT)
    view = view_from([0.0, 0.02, 0.02], 0.4, 10, 45)
    builder.add_camera("cam", view)
    scene = builder.build()
    camera = MujocoCamera(scene.model, scene.data, "cam", effects=CameraEffects(), seed=5)
    depth = camera.render_depth()
    camera.close()
    return depth, camera.intrinsics, view


def test_bench_plane_and_clusters(depth_scene):
    depth, k, view = depth_scene
    points = depth_to_points(depth, k)
    plane = segment_bench(points)
    up_in_camera = invert(view)[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(np.clip(plane.normal @ up_in_camera, -1, 1))) < 1.0
    camera_height = view[2, 3] - BENCH_Z
    assert plane.offset == pytest.approx(camera_height, abs=0.003)
    clusters = cluster_objects(points, plane)
    assert len(clusters) == len(VIALS)
    for c in clusters:
        assert c.height_m == pytest.approx(HEIGHT, abs=0.004)


def test_grasp_pose_refined_from_a_rough_prior(depth_scene):
    depth, k, view = depth_scene
    points = depth_to_points(depth, k)
    plane = segment_bench(points)
    clusters = cluster_objects(points, plane)
    truth_world = make_transform(np.eye(3), [*VIALS["v1"], BENCH_Z])
    truth = invert(view) @ truth_world
    target = min(clusters, key=lambda c: np.linalg.norm(c.centroid - truth[:3, 3]))
    near = points[np.linalg.norm(points - target.centroid, axis=1) < 0.04]
    near = near[plane.height_of(near) > 0.004]
    prior = truth @ make_transform(rpy_to_matrix(0.05, -0.04, 0.3), [0.004, -0.003, 0.002])
    est = refine_vial_pose(near, prior, radius_m=RADIUS, height_m=HEIGHT, grasp_height_m=0.03)
    err_m, _ = pose_error(est.vial_in_camera, truth)
    axis_err_deg = np.degrees(np.arccos(np.clip(est.vial_in_camera[:3, 2] @ truth[:3, 2], -1, 1)))
    assert err_m < 0.002 and axis_err_deg < 2.0, (err_m, axis_err_deg)
    assert est.grasp_in_camera[:3, 2] @ truth[:3, 2] < -0.99       # approaching down the axis
    assert pose_error(est.grasp_in_camera, truth @ make_transform(np.eye(3), [0, 0, 0.03]))[0] < 0.003


def test_wrong_model_is_refused(depth_scene):
    depth, k, view = depth_scene
    points = depth_to_points(depth, k)
    plane = segment_bench(points)
    truth = invert(view) @ make_transform(np.eye(3), [*VIALS["v1"], BENCH_Z])
    near = points[np.linalg.norm(points - truth[:3, 3] - truth[:3, 2] * HEIGHT / 2, axis=1) < 0.035]
    near = near[plane.height_of(near) > 0.004]
    with pytest.raises(UntrustworthyEstimate, match="vial fit untrustworthy"):
        refine_vial_pose(near, truth, radius_m=0.02, height_m=0.09, grasp_height_m=0.03)


def test_empty_or_mismatched_depth_is_refused(depth_scene):
    depth, k, _ = depth_scene
    with pytest.raises(ImageQualityError, match="valid depth points"):
        segment_bench(depth_to_points(np.zeros_like(depth), k))
    with pytest.raises(ImageQualityError, match="does not match"):
        depth_to_points(depth[:100], k)
    with pytest.raises(UntrustworthyEstimate, match="bench not found"):
        segment_bench(depth_to_points(depth, k), PointCloudParams(min_plane_fraction=0.99))
