"""TensorFlow, imported on first use.

Its C++ logging is quieted first (``TF_CPP_MIN_LOG_LEVEL=2``, unless the user set it) and
the absl and oneDNN lines it prints while loading are kept off stderr; ``HAL_VERBOSE=1``
shows them. ``HAL_TF_CPU_DEVICES=N`` (data-parallel training, see ``parallel``) splits the CPU
into N logical devices right after the import, before anything starts TensorFlow's runtime.
The module handle below imports TensorFlow when first used, so the kernel
modules (and the op list read from them) load without it.
"""

from __future__ import annotations

import sys
import types

from hal.backends.common.frameworks import LazyModule, import_quietly, verbose


_configured = False


def import_tf() -> types.ModuleType:
    global _configured
    module = sys.modules.get("tensorflow")
    if module is None:
        module = import_quietly("tensorflow", quiet_env={"TF_CPP_MIN_LOG_LEVEL": "2"})
        if not verbose():
            module.get_logger().setLevel("ERROR")
    # imported already by the user: their log settings stand, HAL_TF_CPU_DEVICES still applies
    if not _configured:
        from hal.backends.tf_backend.parallel import configure_cpu_devices

        configure_cpu_devices(module)
        _configured = True
    return module


tf = LazyModule("tensorflow", import_tf)


def import_keras() -> types.ModuleType:
    """Keras on TensorFlow: the tf trainer's optimizers. Keras picks its backend once, when
    first imported (``KERAS_BACKEND``), so one loaded on another framework is refused."""
    from hal.errors import BackendError

    import_tf()
    keras = import_quietly("keras", env={"KERAS_BACKEND": "tensorflow"})
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(f"the tf backend trains with Keras's optimizers on TensorFlow, but "
                           f"Keras was loaded on {backend!r} (KERAS_BACKEND); set "
                           f"KERAS_BACKEND=tensorflow before Keras is first imported, or train "
                           f"on a {backend} device")
    return keras
