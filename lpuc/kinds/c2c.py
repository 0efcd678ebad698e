"""Chip-to-chip transfers: ``send``, ``recv`` and ``forward`` task kinds over C2C links.

A ``send`` task READs a tensor's vectors so that vector j passes the link's C2C slice in cycle
``anchor + j`` and SENDs them there: the link carries one vector per cv = cdiv(width * lanes,
c2c.bytes_per_cycle) cycles, so vector j lands in the peer's receive FIFO in cycle
``anchor + (j+1)*cv + c2c.latency`` (ISA.md, SEND). The tx port is busy n*cv cycles: a second
transfer on the link waits for it, which is how the scheduler books links.

A ``recv`` task takes ``n`` of those vectors off the peer's FIFO (RECV, one per cycle) and WRITEs them
into the receiving tensor. RECV may take vector j only once it has arrived and the FIFO holds at
most ``c2c.fifo_vectors``, while vectors arrive only every cv cycles; so a transfer is received in
chunks of at most ``chunk_vectors`` vectors, one ``recv`` task each, whose earliest anchor
(``attrs["release"]``, honoured by the scheduler) is the cycle its last vector arrives minus the
cycles RECV needs to reach it: ``release = S + latency + (j0 + 1)*cv + (c - 1)*(cv - 1)`` for a
chunk of c vectors starting at vector j0 of a SEND issued in cycle S.

Both tasks name their link's slice (``C2C<k>``) in ``attrs["slice"]``: a link is a fixed resource,
not a unit the scheduler picks.
"""

from __future__ import annotations

from isa.config import ChipConfig
from isa.dtypes import DTYPES
from lpuc.kinds.base import TaskKind, register_task_kind
from lpuc.tasks import Task
from lpuc.templates import Builder, Template


def cycles_per_vector(dtype: str, chip: ChipConfig) -> int:
    """cv: link cycles per vector of ``dtype`` (ISA.md, SEND)."""
    return -(-DTYPES[dtype].width * chip.lanes // int(chip.c2c["bytes_per_cycle"]))


def chunk_vectors(chip: ChipConfig) -> int:
    """The most vectors one RECV takes: half the receive FIFO, so a chunk that starts up to
    fifo/2 * cv cycles after its release still finds room for the vectors arriving meanwhile."""
    return max(1, int(chip.c2c["fifo_vectors"]) // 2)


def recv_release(send_issue: int, j0: int, n: int, dtype: str, chip: ChipConfig) -> int:
    """The earliest issue cycle of a RECV of vectors j0 .. j0+n-1 of a SEND issued in ``send_issue``:
    RECV takes vector j0+m in cycle t + m, and it arrives in send_issue + (j0+m+1)*cv + latency."""
    cv = cycles_per_vector(dtype, chip)
    return send_issue + int(chip.c2c["latency"]) + (j0 + 1) * cv + (n - 1) * (cv - 1)


@register_task_kind
class SendTask(TaskKind):
    """READ ``reads[0]`` onto a stream group and SEND it over link ``attrs["slice"]``."""

    name = "send"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        b = Builder(chip)
        src = task.reads[0]
        dt = DTYPES[src.tensor.dtype]
        sl = task.attrs["slice"]
        ti = b.inst(sl, 0, "SEND", dt=dt.code, s=0, n=src.n)
        b.read_group(src, b.pos(sl), 0, ti, "s")  # vector j passes the C2C slice in cycle j
        return b.finish()


@register_task_kind
class RecvTask(TaskKind):
    """RECV ``writes[0].n`` vectors from link ``attrs["slice"]`` and WRITE them into ``writes[0]``."""

    name = "recv"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        b = Builder(chip)
        dst = task.writes[0]
        dt = DTYPES[dst.tensor.dtype]
        sl = task.attrs["slice"]
        ti = b.inst(sl, 0, "RECV", dt=dt.code, d=0, n=dst.n)
        b.write_group(dst, b.pos(sl), int(chip.latency["c2c_recv"]), ti, "d")
        return b.finish()


@register_task_kind
class ForwardTask(TaskKind):
    """A chip on a transfer's route passes ``attrs["n"]`` vectors on: RECV them from link
    ``attrs["rx"]`` onto a stream group flowing towards link ``attrs["tx"]`` and SEND them there as they
    pass, with no SRAM on the way (each chip is a switch). RECV puts vector j on the streams at the rx
    slice in cycle ``c2c_recv + j``; it passes the tx slice ``|pos(tx) - pos(rx)|`` cycles later, which
    is where the SEND issues. As a receiver it is released like a ``recv`` of its vectors; as a sender
    its vectors reach the next chip like those of a ``send`` issued at its SEND."""

    name = "forward"

    def template(self, task: Task, chip: ChipConfig) -> Template:
        b = Builder(chip)
        rx, tx = task.attrs["rx"], task.attrs["slice"]
        n = int(task.attrs["n"])
        dt = DTYPES[task.attrs["dtype"]]
        prx, ptx = b.pos(rx), b.pos(tx)
        # the stream flows from the receiving edge towards the sending one (inwards when both share it)
        direction = "E" if ptx > prx or (ptx == prx and prx < chip.positions // 2) else "W"
        fl = b.new_flight(direction, dt.width)
        t0 = int(chip.latency["c2c_recv"])
        d0 = b.diag(direction, t0, prx)
        for k in range(dt.width):
            b.flights[fl].parts.append((k, min(prx, ptx), max(prx, ptx), d0, d0 + n - 1))
        ri = b.inst(rx, 0, "RECV", dt=dt.code, d=0, n=n)
        ri.refs["d"] = (fl, 0)
        si = b.inst(tx, t0 + abs(ptx - prx), "SEND", dt=dt.code, s=0, n=n)
        si.refs["s"] = (fl, 0)
        return b.finish()
