"""``import hal.compression.distill`` leaves ``hal.compression.distill`` the function.

The implementation is ``hal.compression.distillation``. Were this a plain module holding
``distill``, importing it would bind the module on ``hal.compression`` in place of the
function, and ``hal.distill(...)`` would call a module. So, as ``hal/compare.py`` does, the
module puts the function in its own place in ``sys.modules``; the function also answers to
``.distill``, the name ``hal.compression``'s lazy import reads from this module.
"""

import sys

from hal.compression.distillation import distill

distill.distill = distill  # type: ignore[attr-defined]
sys.modules[__name__] = distill  # type: ignore[assignment]
