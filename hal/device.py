"""Device strings (``KIND[:INDEX][@BACKEND]``) and the description of a device."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hal.errors import DeviceNotFound

_GRAMMAR = re.compile(r"^(?P<kind>[a-z][a-z0-9_]*)(?::(?P<index>\d+))?(?:@(?P<backend>[a-z][a-z0-9_]*))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string; ``index`` and ``backend`` are None when omitted."""

    kind: str
    index: int | None = None
    backend: str | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        if not isinstance(text, str):
            raise DeviceNotFound(
                f"a device is named by a string like 'cpu', 'cuda:0' or 'fpga@emu', "
                f"not {type(text).__name__} {text!r}")
        m = _GRAMMAR.match(text.strip())
        if m is None:
            raise DeviceNotFound(
                f"malformed device string {text!r}: expected KIND[:INDEX][@BACKEND] in lower case, "
                f"e.g. 'cpu', 'cuda:1', 'cpu@jax', 'fpga@emu'")
        index = m.group("index")
        return cls(m.group("kind"), int(index) if index is not None else None, m.group("backend"))

    def __str__(self) -> str:
        s = self.kind
        if self.index is not None:
            s += f":{self.index}"
        if self.backend:
            s += f"@{self.backend}"
        return s


@dataclass
class DeviceInfo:
    """One device a backend knows about, usable or not.

    ``host_memory`` says its buffers live in host RAM, so moving data between it
    and the host is not a transfer. ``simulated`` marks emulators and stand-ins;
    ``slow_simulation`` says why such a device takes far longer per call than the hardware
    it stands for (a cycle-accurate or C simulation: "about 0.4 s per LeNet image"), or is
    empty. The device states these facts; what to do with them (e.g. leave the device out
    of a default comparison) is its user's decision. ``thread_safe`` False says calls on the
    device must not overlap (one accelerator's registers, say): HAL then runs its compiles
    and calls one at a time, whichever threads they come from (``Backend.thread_safe``).
    """

    kind: str
    index: int
    backend: str
    name: str = ""
    usable: bool = True
    reason: str = ""
    simulated: bool = False
    host_memory: bool = True
    details: dict = field(default_factory=dict)
    #: Another name for the device ``alias_of`` (e.g. ``cpu:0@opencl`` for ``opencl:0@opencl``):
    #: both strings resolve to one Device, sharing buffers and transfer counters.
    alias_of: str = ""
    slow_simulation: str = ""
    thread_safe: bool = True

    @property
    def string(self) -> str:
        return f"{self.kind}:{self.index}@{self.backend}"

    def __str__(self) -> str:
        return self.string

    def to_dict(self) -> dict:
        return {
            "device": self.string, "kind": self.kind, "index": self.index,
            "backend": self.backend, "name": self.name, "usable": self.usable,
            "reason": self.reason, "simulated": self.simulated,
            "host_memory": self.host_memory, **({"details": self.details} if self.details else {}),
            **({"alias_of": self.alias_of} if self.alias_of else {}),
            **({"slow_simulation": self.slow_simulation} if self.slow_simulation else {}),
            **({"thread_safe": False} if not self.thread_safe else {}),
        }
