"""The base of HAL's passes: an onnx_ir in-place pass that says what it changed."""

from __future__ import annotations

from onnx_ir.passes import InPlacePass


class HalPass(InPlacePass):
    """An in-place pass that says what it changed in ``detail`` (shown by ``--explain``)."""

    hal_name = ""

    def __init__(self) -> None:
        super().__init__()
        self.detail = ""
