"""The jax kernel table: the shared kernels, and jax's own in ``nn`` (products,
convolution, windowed pools). Its registrations are the backend's op list
(``JaxBackend.ops``); importing it does not import jax."""

from __future__ import annotations

from hal.backends.common.kernels import COMMON
from hal.backends.common.table import KernelTable

TABLE = KernelTable(COMMON)
kernel = TABLE.kernel

from hal.backends.jax_backend.kernels import nn  # noqa: E402,F401
