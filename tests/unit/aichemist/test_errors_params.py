"""The error hierarchy and parameter models: messages name field, value and limit."""

from __future__ import annotations

import pytest
from pydantic import Field

from aichemist.errors import (AIChemistError, CommunicationTimeout, ConfigurationError, DeviceError, EmergencyStop,
                              InterlockTripped, LimitError, PerceptionError, ResultCode, ValidationError,
                              error_from_result)
from aichemist.params import Params, flatten, numeric_bounds, unflatten, validate, validate_config


def test_limit_error_names_field_value_limit_and_device():
    err = LimitError("flow_ml_min", 12.5, 10.0, bound="max", unit="mL/min", device="pump_a")
    assert "pump_a" in str(err) and "flow_ml_min=12.5" in str(err) and "10.0" in str(err)
    assert err.http_status == 422 and err.code == ResultCode.LIMIT_EXCEEDED
    assert err.problems == [{"field": "flow_ml_min", "value": 12.5, "limit": 10.0, "bound": "max",
                             "unit": "mL/min"}]


def test_no_error_derives_from_base_exception_only():
    for cls in (AIChemistError, ValidationError, InterlockTripped, EmergencyStop, CommunicationTimeout):
        assert issubclass(cls, Exception)


@pytest.mark.parametrize("original", [
    InterlockTripped("over_pressure", "24.1 bar > 20 bar"),
    EmergencyStop("e-stop from operator"),
    CommunicationTimeout("pump_a: no reply in 0.5 s"),
    LimitError("temp_c", 150, 120, bound="max"),
])
def test_errors_survive_a_ros_result_round_trip(original):
    rebuilt = error_from_result(int(original.code), original.error_type, original.message)
    assert type(rebuilt) is type(original)
    assert rebuilt.code == original.code and rebuilt.message == original.message
    assert rebuilt.retryable == original.retryable
    if isinstance(original, InterlockTripped):
        assert rebuilt.interlock == "over_pressure"


def test_unknown_error_type_becomes_the_base_class_of_its_code():
    err = error_from_result(10, "SomethingNew", "boom")
    assert type(err) is DeviceError and err.code == ResultCode.DEVICE_ERROR and str(err) == "boom"
    # a perception error type the receiver never imported is still worth a retry
    err = error_from_result(int(ResultCode.PERCEPTION_FAILED), "MarkerNotFound", "marker 11 not found")
    assert isinstance(err, PerceptionError) and err.retryable
    err = error_from_result(999, "SomethingNew", "boom")
    assert type(err) is AIChemistError and err.code == ResultCode.INTERNAL


class _Serial(Params):
    port: str = Field(description="serial port")
    baudrate: int = Field(default=9600, ge=1200, le=115200)


class _PumpParams(Params):
    name: str
    max_flow_ml_min: float = Field(default=10.0, gt=0, le=100)
    serial: _Serial


def test_validate_lists_every_problem_with_field_value_and_limit():
    with pytest.raises(ValidationError) as info:
        validate(_PumpParams, {"name": "p", "max_flow_ml_min": 250, "serial": {"port": "/dev/x", "baudrate": 10},
                               "colour": "red"}, what="pump")
    fields = {p["field"] for p in info.value.problems}
    assert fields == {"max_flow_ml_min", "serial.baudrate", "colour"}
    msg = str(info.value)
    assert "max_flow_ml_min" in msg and "250" in msg and "<=100" in msg and "colour" in msg


def test_flatten_and_unflatten_round_trip_for_ros_parameters():
    names = [n for n, _a, _i in flatten(_PumpParams)]
    assert names == ["name", "max_flow_ml_min", "serial.port", "serial.baudrate"]
    info = dict((n, i) for n, _a, i in flatten(_PumpParams))
    assert numeric_bounds(info["serial.baudrate"]) == (1200, 115200)
    params = validate_config(_PumpParams, {"name": "p", "serial.port": "/dev/ttyUSB0"}, what="pump")
    assert params.serial.port == "/dev/ttyUSB0" and params.serial.baudrate == 9600
    assert unflatten({"a.b.c": 1, "a.d": 2, "e": 3}) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}


def test_configuration_error_is_raised_for_node_parameters():
    with pytest.raises(ConfigurationError, match="serial.port"):
        validate_config(_PumpParams, {"name": "p", "serial.baudrate": 9600}, what="parameters of pump_node")


class _Range(Params):
    low: float
    high: float
    unit: str = ""


class _Limits(Params):
    temp_c: _Range = _Range(low=30, high=120, unit="C")


class _NodeParams(Params):
    journal: str = "j.db"
    limits: _Limits = Field(default_factory=_Limits)


def test_leaf_defaults_come_from_parent_default_instances():
    from aichemist.params import leaf_defaults

    assert leaf_defaults(_NodeParams) == {"journal": "j.db", "limits.temp_c.low": 30, "limits.temp_c.high": 120,
                                          "limits.temp_c.unit": "C"}
