"""Bit-accurate, cycle-exact emulator of the virtual LPU. Runs decoded ``.lpu`` programs only."""

from emulator.errors import EmulatorLimit, Hazard, HazardError, InputError
from emulator.machine import Emulator, RunResult

__all__ = ["Emulator", "RunResult", "Hazard", "HazardError", "InputError", "EmulatorLimit"]
