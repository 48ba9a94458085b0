"""Point-cloud perception with Open3D: bench plane, object clusters and a refined grasp pose.

From a depth image (metres along the optical axis, 0 = no return) and its intrinsics:
  1. ``depth_to_points``: back-projection into the optical frame (NumPy, strided);
  2. ``segment_bench``: RANSAC plane (Open3D ``segment_plane``), normal oriented towards the camera;
  3. ``cluster_objects``: points above the plane, voxel-downsampled, grouped by DBSCAN
     (``cluster_dbscan``), each with centroid, height above the bench and extent;
  4. ``refine_vial_pose``: ICP (``registration_icp``, point-to-point) of the observed cluster onto
     a sampled model of the vial (cylinder side and top) starting from a prior pose (from the rack
     geometry or a fiducial), and the grasp pose from it: gripper z along the vial axis pointing
     down onto the cap, fingers closing across the vial at ``grasp_height_m`` above the bench.
The observed points are registered onto the model (not the model onto the points), so the half of
the vial the camera cannot see does not pull the estimate towards the camera.
Refusals are typed: too few points, no plane, an ICP fit whose fitness or RMSE fails the limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from pydantic import Field

from aichemist.params import Params
from perception.camera import CameraIntrinsics
from perception.errors import ImageQualityError, UntrustworthyEstimate
from perception.geometry import invert, make_transform


class PointCloudParams(Params):
    stride: int = Field(2, ge=1, le=16, description="use every n-th pixel of the depth image")
    min_depth_m: float = Field(0.1, ge=0.0, le=10.0)
    max_depth_m: float = Field(2.0, gt=0.0, le=20.0)
    voxel_m: float = Field(0.003, gt=0.0, le=0.1)
    plane_distance_m: float = Field(0.004, gt=0.0, le=0.1, description="RANSAC inlier distance")
    plane_iterations: int = Field(300, ge=10, le=100000)
    min_plane_fraction: float = Field(0.2, gt=0.0, le=1.0, description="bench must hold this share of points")
    min_height_m: float = Field(0.006, ge=0.0, le=1.0, description="object points start this far above the bench")
    cluster_eps_m: float = Field(0.01, gt=0.0, le=0.2)
    cluster_min_points: int = Field(20, ge=1, le=100000)
    icp_max_distance_m: float = Field(0.008, gt=0.0, le=0.1)
    min_icp_fitness: float = Field(0.8, gt=0.0, le=1.0, description="share of observed points matched by the model")
    max_icp_rmse_m: float = Field(0.0025, gt=0.0, le=0.05)


@dataclass
class BenchPlane:
    normal: np.ndarray          # unit, towards the camera, optical frame
    offset: float               # n . p + offset = 0 on the plane
    inliers: int
    total: int

    def height_of(self, points: np.ndarray) -> np.ndarray:
        return points @ self.normal + self.offset


@dataclass
class ObjectCluster:
    points: np.ndarray
    centroid: np.ndarray
    height_m: float             # highest point above the bench
    extent_m: np.ndarray        # axis-aligned size in the optical frame


@dataclass
class GraspEstimate:
    vial_in_camera: np.ndarray  # vial frame: origin at the bottom centre, z along the axis (up)
    grasp_in_camera: np.ndarray  # gripper frame: z pointing down the vial axis, x across the jaws
    fitness: float
    rmse_m: float


def depth_to_points(depth: np.ndarray, intrinsics: CameraIntrinsics, params: Optional[PointCloudParams] = None
                    ) -> np.ndarray:
    p = params or PointCloudParams()
    if depth is None or depth.ndim != 2 or depth.shape != (intrinsics.height, intrinsics.width):
        raise ImageQualityError(f"depth image shape {None if depth is None else depth.shape} does not match "
                                f"the camera info {intrinsics.width}x{intrinsics.height}")
    d = depth[::p.stride, ::p.stride].astype(np.float64)
    v, u = np.mgrid[0:depth.shape[0]:p.stride, 0:depth.shape[1]:p.stride]
    valid = (d > p.min_depth_m) & (d < p.max_depth_m) & np.isfinite(d)
    z = d[valid]
    x = (u[valid] - intrinsics.cx) * z / intrinsics.fx
    y = (v[valid] - intrinsics.cy) * z / intrinsics.fy
    return np.column_stack([x, y, z])


def _cloud(points: np.ndarray):
    import open3d as o3d

    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(np.ascontiguousarray(points, dtype=np.float64))
    return pc


def segment_bench(points: np.ndarray, params: Optional[PointCloudParams] = None, seed: int = 0) -> BenchPlane:
    import open3d as o3d

    p = params or PointCloudParams()
    if len(points) < 100:
        raise ImageQualityError(f"only {len(points)} valid depth points: no bench to find")
    o3d.utility.random.seed(seed)
    model, inliers = _cloud(points).segment_plane(p.plane_distance_m, 3, p.plane_iterations)
    normal, offset = np.asarray(model[:3], float), float(model[3])
    scale = np.linalg.norm(normal)
    normal, offset = normal / scale, offset / scale
    if offset < 0:  # the camera (origin) on the positive side: n . 0 + offset > 0
        normal, offset = -normal, -offset
    if len(inliers) < p.min_plane_fraction * len(points):
        raise UntrustworthyEstimate(f"largest plane holds {len(inliers)} of {len(points)} points "
                                    f"(< {p.min_plane_fraction:.0%}): bench not found")
    return BenchPlane(normal, offset, len(inliers), len(points))


def cluster_objects(points: np.ndarray, plane: BenchPlane, params: Optional[PointCloudParams] = None
                    ) -> list[ObjectCluster]:
    p = params or PointCloudParams()
    above = points[plane.height_of(points) > p.min_height_m]
    if len(above) == 0:
        return []
    pc = _cloud(above).voxel_down_sample(p.voxel_m)
    pts = np.asarray(pc.points)
    labels = np.asarray(pc.cluster_dbscan(eps=p.cluster_eps_m, min_points=p.cluster_min_points))
    out = []
    for label in sorted(set(labels.tolist()) - {-1}):
        c = pts[labels == label]
        out.append(ObjectCluster(c, c.mean(axis=0), float(plane.height_of(c).max()), c.max(axis=0) - c.min(axis=0)))
    out.sort(key=lambda o: o.centroid[0])
    return out


def vial_model_points(radius_m: float, height_m: float, spacing_m: float = 0.001) -> np.ndarray:
    """Points on a closed cylinder (side and top), vial frame: bottom centre at 0, z up."""
    n_around = max(int(2 * np.pi * radius_m / spacing_m), 16)
    n_up = max(int(height_m / spacing_m), 4)
    a = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    zz = np.linspace(0, height_m, n_up)
    side = np.array([[radius_m * np.cos(t), radius_m * np.sin(t), z] for z in zz for t in a])
    rr = np.arange(spacing_m, radius_m, spacing_m)
    top = np.array([[r * np.cos(t), r * np.sin(t), height_m] for r in rr
                    for t in np.linspace(0, 2 * np.pi, max(int(2 * np.pi * r / spacing_m), 6), endpoint=False)])
    return np.vstack([side, top, [[0.0, 0.0, height_m]]])


def refine_vial_pose(cluster_points: np.ndarray, prior_vial_in_camera: np.ndarray, *, radius_m: float,
                     height_m: float, grasp_height_m: float, params: Optional[PointCloudParams] = None
                     ) -> GraspEstimate:
    import open3d as o3d

    p = params or PointCloudParams()
    if len(cluster_points) < 20:
        raise UntrustworthyEstimate(f"only {len(cluster_points)} points on the vial: cannot refine its pose")
    model = _cloud(vial_model_points(radius_m, height_m))
    observed = _cloud(cluster_points)
    init = invert(prior_vial_in_camera)  # camera -> vial frame
    reg = o3d.pipelines.registration.registration_icp(
        observed, model, p.icp_max_distance_m, init,
        o3d.pipelines.registration.TransformationEstimationPointToPoint(),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=60))
    if reg.fitness < p.min_icp_fitness or reg.inlier_rmse > p.max_icp_rmse_m:
        raise UntrustworthyEstimate(f"vial fit untrustworthy: fitness {reg.fitness:.2f} (min {p.min_icp_fitness}), "
                                    f"rmse {reg.inlier_rmse * 1000:.2f} mm (max {p.max_icp_rmse_m * 1000:.1f} mm)")
    vial_in_camera = invert(np.asarray(reg.transformation))
    # gripper: z down the vial axis, x across the jaws (perpendicular to the line of sight), at grasp height
    axis = vial_in_camera[:3, 2]
    z_g = -axis
    x_g = np.cross(axis, vial_in_camera[:3, 3])
    x_g /= np.linalg.norm(x_g)
    y_g = np.cross(z_g, x_g)
    grasp = make_transform(np.column_stack([x_g, y_g, z_g]), vial_in_camera[:3, 3] + grasp_height_m * axis)
    return GraspEstimate(vial_in_camera, grasp, float(reg.fitness), float(reg.inlier_rmse))
