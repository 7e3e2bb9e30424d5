"""How a served model is configured: ``ModelConfig``, a ``MODEL=DEVICE`` argument, and the
folders of a model repository (``hal.serving.repository`` loads what these describe).

A repository holds one folder per model::

    models/
      lenet/
        model.onnx          # or "model" in the config: a zoo name or another file
        config.json         # or config.toml
      resnet_lite/
        config.toml         # model = "resnet_lite", device = "cpu@torch", max_batch = 16

A config holds any of ``ModelConfig``'s fields but ``name`` (the folder names the model).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hal.errors import OptionError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION = "1"
CONFIG_FILES = ("config.json", "config.toml")


@dataclass
class ModelConfig:
    """How one model is served.

    ``model``: what ``hal.compile`` takes (a zoo name, an .onnx path, bytes, a ``hal.Model``)
    or an already compiled model (a ``hal.CompiledModel``, or any callable with ``inputs`` and
    ``outputs`` lists of ``hal.TensorSpec`` returning a list of arrays). ``device`` and
    ``precision`` and ``options`` go to ``hal.compile``. ``max_batch``: rows per batch at
    most, and per request; 0 serves a model without a batch axis, each request as it comes.
    ``max_delay_ms``: how long the oldest queued request may wait for others to join its
    batch. ``batching``: False runs every request alone. ``queue``: requests waiting at
    most, past which the server answers 503. ``instances``: copies of the compiled model
    running batches side by side, each compiled with its backend's ``serving_options``
    unless ``options`` sets them. ``timeout_s``: how long a request may wait for its answer
    (None: no limit; a request's own ``timeout`` parameter, in microseconds, may shorten it).
    """

    name: str
    model: Any = None
    device: str = "cpu"
    precision: str | None = None
    max_batch: int = 32
    max_delay_ms: float = 0.0
    batching: bool = True
    queue: int = 256
    instances: int = 1
    timeout_s: float | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.name

    def check(self) -> ModelConfig:
        """Raise an OptionError naming the first setting that is out of range."""
        where = f"model {self.name!r}"
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise OptionError(f"model name {self.name!r} must be 1-128 letters, digits, '_', "
                              f"'.' or '-', starting with a letter or digit (it is part of the "
                              f"URL)")
        if not isinstance(self.device, str):
            raise OptionError(f"{where}: device must be a device string, got {self.device!r}")
        _int(self.max_batch, "max_batch", 0, where)
        _int(self.queue, "queue", 1, where)
        _int(self.instances, "instances", 1, where)
        if isinstance(self.max_delay_ms, bool) or not isinstance(self.max_delay_ms, (int, float)) \
                or not 0 <= self.max_delay_ms <= 60_000:
            raise OptionError(f"{where}: max_delay_ms must be a number of milliseconds from 0 "
                              f"to 60000, got {self.max_delay_ms!r}")
        if not isinstance(self.batching, bool):
            raise OptionError(f"{where}: batching must be true or false, got "
                              f"{self.batching!r}")
        if self.timeout_s is not None and (isinstance(self.timeout_s, bool) or not isinstance(
                self.timeout_s, (int, float)) or not self.timeout_s > 0):
            raise OptionError(f"{where}: timeout_s must be a number of seconds > 0 or None, "
                              f"got {self.timeout_s!r}")
        if not isinstance(self.options, dict):
            raise OptionError(f"{where}: options must be a mapping of hal.compile options, got "
                              f"{self.options!r}")
        return self

    def settings(self) -> dict:
        """The serving settings, without the model itself (for reports and the config API)."""
        d = {k: v for k, v in asdict(self).items() if k != "model"}
        d["model"] = self.model if isinstance(self.model, str) else type(self.model).__name__
        return d


def _int(v: Any, key: str, low: int, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise OptionError(f"{where}: {key} must be a whole number >= {low}, got {v!r}")


#: the keys a config file may hold (the folder names the model)
FILE_KEYS = tuple(f.name for f in fields(ModelConfig) if f.name != "name")
#: the keys a load request's ``config`` parameter may override (not the model's source:
#: a client never names a file on the server)
OVERRIDE_KEYS = tuple(k for k in FILE_KEYS if k != "model")


def parse_spec(spec: str, defaults: dict | None = None) -> ModelConfig:
    """``MODEL[=DEVICE]`` as a config: MODEL a zoo name or an .onnx path (served under the
    zoo name or the file's stem), DEVICE a device string (default ``defaults['device']``)."""
    from hal.frontends import is_zoo_name

    defaults = dict(defaults or {})
    if not isinstance(spec, str) or not spec.strip():
        raise OptionError(f"a model to serve is MODEL or MODEL=DEVICE, got {spec!r}")
    model, device = spec, None
    if not (is_zoo_name(spec) or Path(spec).is_file()):
        model, eq, device = spec.rpartition("=")
        if not eq or not model or not device:
            model, device = spec, None
    if not (is_zoo_name(model) or Path(model).is_file()):
        from hal.frontends import to_model

        to_model(model)  # a ModelError naming the zoo's models
        raise OptionError(f"{model!r} is neither a zoo model nor an existing .onnx file "
                          f"(serve MODEL or MODEL=DEVICE)")
    name = model if is_zoo_name(model) else Path(model).stem
    cfg = {**defaults, "name": name, "model": model}
    if device:
        cfg["device"] = device
    return ModelConfig(**cfg).check()


def read_folder(folder: Path, defaults: dict | None = None) -> ModelConfig:
    """One model folder of a repository as a config (OptionError saying what is wrong)."""
    found = [folder / n for n in CONFIG_FILES if (folder / n).is_file()]
    if len(found) > 1:
        raise OptionError(f"{folder} holds both config.json and config.toml; keep one")
    doc: dict = {}
    if found:
        doc = _read_config(found[0])
    unknown = sorted(set(doc) - set(FILE_KEYS))
    if unknown:
        raise OptionError(f"{found[0]}: unknown key(s) {unknown}; a model's config takes "
                          f"{', '.join(FILE_KEYS)}")
    cfg = {**(defaults or {}), **doc, "name": folder.name}
    model = doc.get("model")
    if model is None:
        onnx = sorted(folder.glob("*.onnx"))
        if len(onnx) != 1:
            raise OptionError(f"{folder}: a model folder holds one .onnx file or names its "
                              f"model in config.json/config.toml (\"model\": a zoo name or a "
                              f"file), found {len(onnx)} .onnx files")
        cfg["model"] = str(onnx[0])
    elif isinstance(model, str) and (folder / model).is_file():
        cfg["model"] = str(folder / model)
    return ModelConfig(**cfg).check()


def _read_config(path: Path) -> dict:
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib
                except ImportError:
                    raise OptionError(f"{path}: reading TOML needs Python 3.11 or the tomli "
                                      f"package; or write config.json") from None
            doc = tomllib.loads(path.read_text())
    except OptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error is the file's
        raise OptionError(f"{path} cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise OptionError(f"{path} must hold a mapping of settings")
    return doc


def read_repository(path: str | Path, defaults: dict | None = None) -> dict[str, Any]:
    """Every model folder of a repository: name -> ModelConfig, or the OptionError message
    that keeps it from loading."""
    root = Path(path)
    if not root.is_dir():
        raise OptionError(f"model repository {str(root)!r} is not a folder")
    out: dict[str, Any] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out[folder.name] = read_folder(folder, defaults)
        except OptionError as exc:
            out[folder.name] = str(exc)
    return out
