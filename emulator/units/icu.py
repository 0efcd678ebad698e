"""ICU and queue-control handlers: NOP, NOTIFY, SYNC.

They move no data; their whole effect is timing, which the emulator checks before it evaluates
anything (busy queues for NOP, barrier arrival for SYNC).
"""

from __future__ import annotations

from emulator.units import handles


@handles("NOP", "NOTIFY", "SYNC")
def no_data(em, op):
    """No data effect."""
    return None
