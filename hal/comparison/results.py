"""The rows of a comparison and every way of writing them: JSON, CSV, HTML, pandas, a table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from hal.comparison.policy import best_rows
from hal.comparison.row import FIELDS, Row
from hal.errors import HalError

SCHEMA = "hal-compare/1"


class Results:
    """Rows plus the environment they were measured in."""

    def __init__(self, rows: list[Row], environment: dict):
        self.rows = rows
        self.environment = environment

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        bad = sum(1 for r in self.rows if r.error)
        stop = ", interrupted" if self.interrupted else ""
        return f"<hal.comparison.Results {len(self.rows)} rows, {bad} failed{stop}>"

    @property
    def interrupted(self) -> str | None:
        """How far a run stopped by Ctrl-C got (``CompareInterrupted``); None for a whole run.
        Every writer shows it: a field of the JSON, a column of the CSV, a note in the HTML
        and the table."""
        return self.environment.get("run", {}).get("interrupted")

    # -- best rows ------------------------------------------------------------------------
    def best(self) -> dict[tuple, Row]:
        """The best row per (model, batch, precision): lowest p50 (p90 for SingleStream,
        highest throughput for MLPerf Offline and Server). A simulated device's time is its
        simulator's, not the hardware's: it is best only where no real device was measured.
        The table, the JSON (``best`` per row) and the HTML report all mark these rows."""
        return best_rows(self.rows)

    # -- writers -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        best = {id(r) for r in self.best().values()}
        stop = {"interrupted": self.interrupted} if self.interrupted else {}
        return {"schema": SCHEMA, **stop, "environment": self.environment,
                "rows": [{**r.to_dict(), "best": id(r) in best} for r in self.rows]}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=str)
        _write(path, text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """One line per row; nested fields are flattened (transfers_count, placement as text).
        An interrupted run has one more column, ``interrupted``, its note on every row."""
        buf = io.StringIO()
        stop = {"interrupted": self.interrupted} if self.interrupted else {}
        w = csv.DictWriter(buf, fieldnames=_csv_fields() + list(stop), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({**_flat(r), **stop})
        _write(path, buf.getvalue())
        return buf.getvalue()

    def to_html(self, path: str | Path | None = None) -> str:
        """A self-contained report (one file, inline SVG plots, no network)."""
        from hal.comparison.report import html_report

        text = html_report(self)
        _write(path, text)
        return text

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas), nested fields flattened as in CSV."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise HalError("Results.to_pandas() needs pandas: pip install pandas "
                           "(or use to_csv()/to_json(), which need nothing)") from exc
        return pd.DataFrame([_flat(r, text=False) for r in self.rows], columns=_csv_fields())

    @classmethod
    def from_json(cls, source: str | Path) -> Results:
        """Read what ``to_json`` wrote (a path, or the JSON text itself)."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            p = Path(source)
            if not p.exists():
                raise HalError(f"no comparison file {str(p)!r}; write one with "
                               f"`hal compare --json FILE`")
            text = p.read_text()
        try:
            data = json.loads(text)
            rows = [Row.from_dict(r) for r in data["rows"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HalError(f"{str(source)[:200]!r} is not a `hal compare --json` file: "
                           f"{type(exc).__name__}: {exc}") from exc
        return cls(rows, data.get("environment", {}))

    # -- the terminal table ------------------------------------------------------------------
    def table(self, title: str | None = None):
        from hal.comparison.table import rich_table

        return rich_table(self, title)


def _write(path, text: str) -> None:
    if path:
        Path(path).write_text(text, encoding="utf-8")


_NESTED = ("placement", "segments", "transfers", "mlperf")


def _csv_fields() -> list[str]:
    out = []
    for f in FIELDS:
        if f == "transfers":
            out += ["transfers_count", "transfers_bytes"]
        elif f == "mlperf":
            out += ["mlperf_metric", "mlperf_value", "mlperf_result"]
        else:
            out.append(f)
    return out


def _flat(r: Row, text: bool = True) -> dict:
    d = r.to_dict()
    t = d.pop("transfers") or {}
    d["transfers_count"], d["transfers_bytes"] = t.get("count"), t.get("bytes")
    m = d.pop("mlperf") or {}
    d["mlperf_metric"], d["mlperf_value"], d["mlperf_result"] = (
        m.get("metric"), m.get("value"), m.get("result"))
    d["placement"] = placement_text(r.placement)
    d["segments"] = " > ".join(f"{dev}[{n}]" for dev, n in r.segments)
    d["accelerator"] = accelerator_text(r.accelerator)
    if text:
        d["round_p50_ms"] = " ".join(f"{v:.6g}" for v in r.round_p50_ms)
        d["losses"] = " ".join(f"{v:.7g}" for v in r.losses)
    return d


def accelerator_text(accelerator: dict) -> str:
    """A row's accelerator figures (segment -> AcceleratorStats as a dict) in one line."""
    from hal.backend import AcceleratorStats

    return " | ".join(f"segment {seg}: "
                      f"{d if isinstance(d, str) else AcceleratorStats.from_dict(d).summary()}"
                      for seg, d in accelerator.items())  # text: a file from before the type


def placement_text(placement: dict) -> str:
    return "; ".join(f"{d}: {p['segments']} seg/{p['nodes']} nodes" for d, p in placement.items())
