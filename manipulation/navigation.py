"""Base navigation: a collision-free 2D route to a station's dock pose (OMPL), then a straight
final approach.

The base is omnidirectional, so the route is planned for the circle that covers its footprint
(radius + 0.25 m: room for the odometry's drift between two fiducial fixes) among the lab's boxes (benches, obstacles, walls) inflated by that radius;
the heading is turned to the dock heading at the pre-dock pose, 0.35 m before the dock, and the
last leg is a straight drive along the station's axis, checked with the real rectangular
footprint.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from manipulation import robot_spec
from manipulation.errors import NoPathFound
from manipulation.layout import Box, LabLayout, Pose2D, Station

PRE_DOCK_M = 0.35


def _inside_inflated(box: Box, x: float, y: float, inflate: float) -> bool:
    c, s = math.cos(-box.yaw_rad), math.sin(-box.yaw_rad)
    dx, dy = x - box.center_m[0], y - box.center_m[1]
    lx, ly = c * dx - s * dy, s * dx + c * dy
    hx, hy = box.size_m[0] / 2, box.size_m[1] / 2
    # distance from the point to the rectangle
    ex, ey = max(abs(lx) - hx, 0.0), max(abs(ly) - hy, 0.0)
    return math.hypot(ex, ey) < inflate


def footprint_collides(layout: LabLayout, pose: Pose2D, clearance_m: float = 0.0,
                       spec: robot_spec.RobotSpec = robot_spec.DEFAULT_SPEC) -> bool:
    """The base's rectangle (sampled along its edges) against the lab's boxes."""
    hx, hy = spec.base_size_m[0] / 2, spec.base_size_m[1] / 2
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    for u in np.linspace(-1, 1, 9):
        for lx, ly in ((u * hx, hy), (u * hx, -hy), (hx, u * hy), (-hx, u * hy)):
            x, y = pose.x + c * lx - s * ly, pose.y + s * lx + c * ly
            if any(_inside_inflated(b, x, y, clearance_m + 1e-9) for b in layout.all_boxes()):
                return True
    return False


def pre_dock_pose(station: Station) -> Pose2D:
    dock = station.dock_pose()
    return Pose2D(x=dock.x - PRE_DOCK_M * math.cos(dock.yaw), y=dock.y - PRE_DOCK_M * math.sin(dock.yaw), yaw=dock.yaw)


class BaseRoutePlanner:
    def __init__(self, layout: LabLayout, clearance_m: float = 0.25, planning_time_s: float = 0.5,
                 spec: robot_spec.RobotSpec = robot_spec.DEFAULT_SPEC) -> None:
        self.layout = layout
        self.inflate = spec.base_radius_m + clearance_m
        self.planning_time_s = planning_time_s
        self.boxes = layout.all_boxes()

    def point_free(self, x: float, y: float) -> bool:
        room = self.layout.room_size_m
        if not (0.0 <= x <= room[0] and 0.0 <= y <= room[1]):
            return False
        return not any(_inside_inflated(b, x, y, self.inflate) for b in self.boxes)

    def segment_free(self, a: Sequence[float], b: Sequence[float], step_m: float = 0.02) -> bool:
        n = max(1, int(math.ceil(math.dist(a, b) / step_m)))
        return all(self.point_free(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(n + 1))

    def route(self, start: Pose2D, station: Station) -> list[Pose2D]:
        """Waypoints from ``start`` to the station's dock pose (last two: pre-dock, dock)."""
        pre = pre_dock_pose(station)
        dock = station.dock_pose()
        if footprint_collides(self.layout, dock):
            raise NoPathFound(f"the dock pose of '{station.name}' overlaps the lab's furniture")
        undock: list[Pose2D] = []
        if not self.point_free(start.x, start.y):
            # docked (closer to a bench than the route clearance): back straight out first
            for back in np.arange(0.05, 0.80, 0.05):
                p = Pose2D(x=start.x - back * math.cos(start.yaw), y=start.y - back * math.sin(start.yaw), yaw=start.yaw)
                if footprint_collides(self.layout, p):
                    break
                if self.point_free(p.x, p.y):
                    undock = [p]
                    break
            if not undock:
                raise NoPathFound(f"the base at ({start.x:.2f}, {start.y:.2f}) cannot back out to free space")
            start = undock[0]
        a, b = (start.x, start.y), (pre.x, pre.y)
        if not self.point_free(*b):
            raise NoPathFound(f"the pre-dock pose of '{station.name}' is not free for the base")
        if math.dist(a, b) < 1e-3:
            points = [a]
        elif self.segment_free(a, b):
            points = [a, b]
        else:
            points = None
            for _ in range(3):  # a route can fail the finer re-verification: plan again
                try:
                    points = self._ompl(a, b)
                    break
                except NoPathFound as exc:
                    last = exc
            if points is None:
                raise last
        waypoints = [Pose2D(x=px, y=py, yaw=pre.yaw) for px, py in points[1:]]
        return undock + (waypoints if waypoints else [pre]) + [dock]

    def _ompl(self, a, b) -> list[tuple[float, float]]:
        from ompl import base as ob
        from ompl import geometric as og

        space = ob.RealVectorStateSpace(2)
        bounds = ob.RealVectorBounds(2)
        bounds.setLow(0, 0.0)
        bounds.setHigh(0, float(self.layout.room_size_m[0]))
        bounds.setLow(1, 0.0)
        bounds.setHigh(1, float(self.layout.room_size_m[1]))
        space.setBounds(bounds)
        ss = og.SimpleSetup(space)
        ss.setStateValidityChecker(lambda s: self.point_free(s[0], s[1]))
        ss.getSpaceInformation().setStateValidityCheckingResolution(0.0005)  # 5 mm over a 10 m extent
        sa, sb = space.allocState(), space.allocState()
        sa[0], sa[1], sb[0], sb[1] = a[0], a[1], b[0], b[1]
        if not self.point_free(*a):
            raise NoPathFound(f"the base at ({a[0]:.2f}, {a[1]:.2f}) is too close to an obstacle to plan from")
        ss.setStartAndGoalStates(sa, sb)
        ss.setPlanner(og.RRTConnect(ss.getSpaceInformation()))
        ss.solve(self.planning_time_s)
        if not ss.haveExactSolutionPath():
            raise NoPathFound(f"no route for the base from ({a[0]:.2f}, {a[1]:.2f}) to ({b[0]:.2f}, {b[1]:.2f})")
        ss.simplifySolution(0.1)
        path = ss.getSolutionPath()
        pts = [(path.getState(k)[0], path.getState(k)[1]) for k in range(path.getStateCount())]
        # verify at fine resolution: every segment's points keep the clearance
        for p, q in zip(pts[:-1], pts[1:]):
            if not self.segment_free(p, q, 0.01):
                raise NoPathFound("base route failed verification")
        return pts
