"""hal_int8 as seen from its AXI-lite port, for the transports that model it in software
(``emu``, ``opencl`` on a CPU runtime, the pynq stand-in of the tests): a register file whose
``ap_start`` runs one layer, the start/done handshake of a Vitis HLS control interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import transport as T


def signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


@dataclass(frozen=True)
class Call:
    """The arguments of one ``hal_int8_layer`` call, decoded from the registers."""

    addr: dict  # x, w, bias, mult, shift, y -> 64-bit address
    args: dict  # op, n, c, ... -> signed int32

    def nbytes(self) -> dict | None:
        """Bytes each buffer spans, or None when the kernel will refuse the sizes anyway."""
        a = dict(self.args)
        if a["op"] == 1:
            a.update(h=1, wd=1, kh=1, kw=1, stride=1, groups=1, pad=0, pool=0)
        n, c, h, wd, o, kh, kw = (a[k] for k in ("n", "c", "h", "wd", "o", "kh", "kw"))
        s, p, g, pool = a["stride"], a["pad"], a["groups"], a["pool"]
        if min(n, c, h, wd, o, kh, kw, s, g) < 1 or p < 0 or pool < 0 or c % g or o % g:
            return None
        pk = max(pool, 1)
        oh, ow = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
        if oh < pk or ow < pk:
            return None
        return {"x": n * c * h * wd, "w": o * (c // g) * kh * kw, "bias": 4 * o, "mult": 4 * o,
                "shift": 4 * o, "y": n * o * (oh // pk) * (ow // pk)}


class RegisterFile:
    """The control registers; ``start(call)`` computes and returns (status, cycles)."""

    def __init__(self, start):
        self._start = start
        self.regs: dict[int, int] = {T.CTRL: T.AP_IDLE}

    def read(self, offset: int) -> int:
        v = self.regs.get(offset, 0)
        if offset == T.CTRL:  # ap_done is clear-on-read, as on the HLS control interface
            self.regs[T.CTRL] = v & ~T.AP_DONE
        return v

    def write(self, offset: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if offset != T.CTRL:
            self.regs[offset] = value
            return
        if not value & T.AP_START:
            return
        self.regs[T.CTRL] = 0  # busy
        call = Call({k: self.regs.get(o, 0) | (self.regs.get(o + 4, 0) << 32)
                     for k, o in T.ADDRESS_REGS.items()},
                    {k: signed32(self.regs.get(o, 0)) for k, o in T.SCALAR_REGS.items()})
        try:
            status, cycles = self._start(call)
        finally:
            self.regs[T.CTRL] = T.AP_DONE | T.AP_IDLE | 0x8  # done, idle, ready
        self.regs[T.STATUS] = status & 0xFFFFFFFF
        self.regs[T.CYCLES_LO] = cycles & 0xFFFFFFFF
        self.regs[T.CYCLES_HI] = (cycles >> 32) & 0xFFFFFFFF
