"""The robot twin as a LabTwin plugin: loaded by import path, stepped on the lab's clock."""

from __future__ import annotations

import pytest

pytest.importorskip("mujoco")


def test_robot_twin_loads_as_a_lab_twin_subsystem_and_drifts_when_driven():
    from sim.lab_twin import LabTwin, TwinSubsystem

    lab = LabTwin.from_config([{"name": "robot", "plugin": "sim.robot_twin:make_robot_twin",
                                "params": {"seed": 4, "start_station": "hplc_autosampler"}}])
    robot = lab.subsystems["robot"]
    assert isinstance(robot, TwinSubsystem)
    start = robot.true_base_pose()
    robot.set_base_velocity(-0.4, 0.0, 0.0)   # back away from the bench for 2 s
    lab.clock.sleep(2.0)
    robot.set_base_velocity(0.0, 0.0, 0.0)
    true, odom = robot.true_base_pose(), robot.odom_pose
    assert robot.t == pytest.approx(2.0, abs=0.01)
    assert true.x == pytest.approx(start.x - 0.8, abs=0.1)
    # odometry integrates the command exactly; the true motion departs from it (drift)
    assert odom[0] == pytest.approx(start.x - 0.8, abs=1e-6)
    assert abs(true.x - odom[0]) + abs(true.y - odom[1]) > 1e-4
    # the vials stayed in their slots while the robot drove
    assert robot.vial_slot("vial_r01") == "reagent_rack/A1"
