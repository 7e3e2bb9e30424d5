"""One measured (model, device, batch, precision) combination: the unit of every report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class Row:
    """A row of ``hal compare``. Times are per call (one batch); ``error`` says why a row failed.

    A training row (``task == "training"``, ``hal compare --train``) times one optimizer step
    (forward, backward, update) on a micro-batch of ``batch`` samples; its throughput is
    samples/s, it has no reference error, and ``losses`` are its first ``train_steps`` steps'
    losses from the model's initial weights on fixed data (``train_data``), which every device
    starts from alike.

    Spread (``iqr_ms``, ``mad_ms``, ``runs``; ``p50_spread_ms`` over rounds) is recorded so
    that two runs can be compared against their own noise (see ``hal.comparison.baseline``).
    """

    model: str
    device: str
    #: the machine that measured the row (``hal compare --cluster``; "" on this machine)
    host: str = ""
    backend: str = ""
    simulated: bool = False
    device_name: str = ""
    batch: int = 1
    precision: str = "fp32"
    #: "dynamic": an int8 row whose activations were quantized at run time (else static scales)
    calibration: str | None = None
    scenario: str | None = None  # None: HAL's own timing loop; else the MLPerf scenario
    task: str = "inference"  # or "training"
    compile_s: float | None = None
    first_call_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    iqr_ms: float | None = None
    mad_ms: float | None = None
    runs: int = 0
    #: with ``rounds`` > 1 (``hal compare --rounds``) the figures above are medians over rounds,
    #: ``round_p50_ms`` each round's p50 and ``p50_spread_ms`` half their range
    rounds: int = 1
    round_p50_ms: list = field(default_factory=list)
    p50_spread_ms: float | None = None
    throughput_per_s: float | None = None
    peak_mem_mb: float | None = None
    mem_scope: str = ""
    max_abs_err: float | None = None
    top1_agreement: float | None = None
    placement: dict = field(default_factory=dict)
    segments: list = field(default_factory=list)
    transfers: dict = field(default_factory=dict)
    mlperf: dict | None = None
    #: accelerator segments' own figures after the last call: segment index -> the
    #: ``hal.backend.AcceleratorStats`` as a dict (cycles read from the device, estimates
    #: of real parts labelled as such)
    accelerator: dict = field(default_factory=dict)
    train_steps: int = 0
    losses: list = field(default_factory=list)
    loss_first: float | None = None  # the first step's loss: the initial weights' loss
    loss_last: float | None = None  # the loss of step ``train_steps``
    train_data: str = ""
    error: str | None = None

    @property
    def key(self) -> tuple:
        """What identifies a row across runs (for baselines)."""
        key = (self.model, self.device, self.batch, self.precision, self.scenario, self.task)
        return key + (self.host,) if self.host else key

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


FIELDS = [f.name for f in fields(Row)]


def failure(exc: BaseException, what: str) -> str:
    """A failed row's ``error``: a HalError's own message, else what failed and how."""
    from hal.errors import HalError

    if isinstance(exc, HalError):
        return f"{type(exc).__name__}: {exc}"
    return f"{what} failed: {type(exc).__name__}: {exc}"


def precision_label(row: Row) -> str:
    """The row's precision as tables show it: "int8 dynamic" for run-time activation scales."""
    return row.precision + (" dynamic" if row.calibration == "dynamic" else "")
