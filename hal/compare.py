"""``import hal.compare`` leaves ``hal.compare`` the comparison function.

The library is the package ``hal.comparison``; ``hal.compare(...)`` is its entry point on the
public API. Were this a plain module, importing it by name would bind the module on ``hal``
in place of the function. So the module puts the function in its own place in
``sys.modules``: the import system reads the module back from there after running it and binds
what it finds on the parent package (Python 3.4 and later).
"""

import sys

from hal.comparison.harness import compare

sys.modules[__name__] = compare
