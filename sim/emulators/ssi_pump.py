"""Emulator of a Teledyne SSI (Scientific Systems Inc.) Series III / LabAlliance HPLC piston pump.

Written from the pump manual's Appendix A "Remote Operation", section "Command Interpreter"
(SSI manual 90-2581 rev B and the Series I/II/III operator manuals): 9600 8N1; one two-letter
command per CR-terminated line, case-insensitive; every answer ends with ``/``; invalid commands
answer ``Er/``; ``#`` clears the command buffer; the pump stops itself when the pressure crosses
the upper (UP) or lower (LP) limit and reports it through RF.

Physics for the twin: ``delivered_flow_ml_min`` is the setpoint while running (0 when stopped or
stalled); the twin sets the system pressure it sees (``set_system_pressure_bar``) from its
hydraulics; ``volume_delivered_ml`` integrates the flow (reagent consumption).

Faults: ``garbled``, ``no_reply``, ``disconnect`` (common); ``stall`` (motor stall: no flow, RF
reports it, the pump drops out of run); ``pressure_spike`` (``bar`` added to the reported and
enforced pressure, e.g. a blockage: the pump's own upper-limit stop can trip).
"""

from __future__ import annotations

from .base import EmulatorBase

PSI_PER_BAR = 14.503773773

# head -> {flow command: (digits, mL/min per count, max count)}
_FLOW_COMMANDS = {
    "10ml": {"FL": (3, 0.01, 999), "FO": (4, 0.01, 1000), "FM": (4, 0.001, 9999)},
    "5ml": {"FL": (3, 0.01, 500), "FO": (4, 0.01, 500), "FM": (4, 0.001, 5000)},
    "40ml": {"FL": (3, 0.1, 399), "FO": (4, 0.1, 400)},
}
_MAX_UPPER_PSI = {"steel": 6000, "plastic": 5000}


class SSIPumpEmulator(EmulatorBase):
    terminator = b"\r"
    reply_terminator = b"/"
    device_faults = ("stall", "pressure_spike")

    def __init__(self, name: str = "ssi_pump", *, head: str = "10ml", head_material: str = "steel",
                 firmware: str = "v3.10 SR3O firmware", seed: int = 0) -> None:
        super().__init__(name, seed=seed)
        self.head = head
        self.head_material = head_material
        self.firmware = firmware
        self.flow_setpoint_ml_min = 1.0 if head != "40ml" else 10.0
        self.running = False
        self.upper_limit_psi = _MAX_UPPER_PSI[head_material]
        self.lower_limit_psi = 0
        self.keypad_enabled = True
        self.fault_stall = False
        self.fault_upper = False
        self.fault_lower = False
        self.system_pressure_bar = 0.0
        self.volume_delivered_ml = 0.0
        self.fault_mode = False
        # the lower limit is only enforced once the pump has been running this long (pressure
        # has to build up after a start; an emulator assumption, not from the manual)
        self.lower_limit_grace_s = 30.0
        self._run_time_s = 0.0

    # --- physical side -----------------------------------------------------------------------
    def set_system_pressure_bar(self, bar: float) -> None:
        with self._lock:
            self.system_pressure_bar = max(0.0, float(bar))
            self._enforce_pressure_limits()

    @property
    def pressure_bar(self) -> float:
        spike = self.faults.get("pressure_spike", {}).get("bar", 0.0) if "pressure_spike" in self.faults else 0.0
        return self.system_pressure_bar + spike

    @property
    def pressure_psi(self) -> int:
        return int(round(self.pressure_bar * PSI_PER_BAR))

    @property
    def delivered_flow_ml_min(self) -> float:
        if not self.running:
            return 0.0
        return self.flow_setpoint_ml_min

    def _enforce_pressure_limits(self) -> None:
        if not self.running:
            return
        if self.pressure_psi > self.upper_limit_psi:
            self.fault_upper = True
            self.running = False
        elif (self.lower_limit_psi > 0 and self.pressure_psi < self.lower_limit_psi
              and self._run_time_s >= self.lower_limit_grace_s):
            self.fault_lower = True
            self.running = False

    def _step(self, t: float, dt: float) -> None:
        self._run_time_s = self._run_time_s + dt if self.running else 0.0
        self.volume_delivered_ml += self.delivered_flow_ml_min * dt / 60.0
        self._enforce_pressure_limits()

    def _on_fault(self, fault: str, kw: dict) -> None:
        if fault == "stall":  # the firmware detects the stalled motor and drops out of run
            self.fault_stall = True
            self.running = False
        elif fault == "pressure_spike":
            kw.setdefault("bar", 50.0)
            self._enforce_pressure_limits()

    # --- bytes -------------------------------------------------------------------------------
    def _next_frame(self) -> bytes | None:
        # '#' clears the command buffer at once (no CR needed, no answer)
        hash_at = self._buf.rfind(b"#")
        if hash_at >= 0:
            del self._buf[: hash_at + 1]
        return super()._next_frame()

    def handle(self, frame: bytes) -> bytes:
        text = frame.strip().decode("ascii", errors="replace").upper()
        reply = self._answer(text)
        return reply.encode("ascii")

    def _answer(self, cmd: str) -> str:
        if len(cmd) < 2:
            return "Er/"
        code, arg = cmd[:2], cmd[2:]
        if code == "RU" and not arg:
            if self.fault_mode:
                return "Er/"
            self.fault_upper = self.fault_lower = False
            if "stall" in self.faults:  # accepted, but the motor stalls again at once
                self.fault_stall = True
                return "OK/"
            self.fault_stall = False
            self.running = True
            self._enforce_pressure_limits()
            return "OK/"
        if code == "ST" and not arg:
            self.running = False
            return "OK/"
        if code in ("FL", "FO", "FM"):
            spec = _FLOW_COMMANDS[self.head].get(code)
            if spec is None or len(arg) != spec[0] or not arg.isdigit():
                return "Er/"
            digits, per_count, max_count = spec
            count = int(arg)
            if not 1 <= count <= max_count:
                return "Er/"
            self.flow_setpoint_ml_min = round(count * per_count, 4)
            return "OK/"
        if code == "PR" and not arg:
            return f"OK,{self.pressure_psi}/"
        if code == "CC" and not arg:
            return f"OK,{self.pressure_psi},{self._flow_text()}/"
        if code == "CS" and not arg:
            return (f"OK,{self._flow_text()},{self.upper_limit_psi},{self.lower_limit_psi},PSI,"
                    f"{1 if self.head == '40ml' else 0},{1 if self.running else 0},1/")
        if code == "ID" and not arg:
            return f"OK,{self.firmware}/"
        if code == "UP":
            if len(arg) != 4 or not arg.isdigit():
                return "Er/"
            value = int(arg)
            if value > _MAX_UPPER_PSI[self.head_material] or value < self.lower_limit_psi + 100:
                return "Er/"
            self.upper_limit_psi = value
            self._enforce_pressure_limits()
            return "OK/"
        if code == "LP":
            if len(arg) != 4 or not arg.isdigit():
                return "Er/"
            value = int(arg)
            if value > self.upper_limit_psi - 100:
                return "Er/"
            self.lower_limit_psi = value
            return "OK/"
        if code == "RF" and not arg:
            return f"OK,{int(self.fault_stall)},{int(self.fault_upper)},{int(self.fault_lower)}/"
        if code == "SF" and not arg:
            self.fault_mode = True
            self.running = False
            return "OK/"
        if code == "KD" and not arg:
            self.keypad_enabled = False
            return "OK/"
        if code == "KE" and not arg:
            self.keypad_enabled = True
            return "OK/"
        return "Er/"

    def _flow_text(self) -> str:
        flow = self.flow_setpoint_ml_min
        if self.head == "40ml":
            return f"{flow:.1f}"
        return f"{flow:.3f}" if flow < 10 else f"{flow:.2f}"
