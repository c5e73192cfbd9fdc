"""Every numba kernel of driftmon lives in this package.

The modules here import only numpy and numba and hold pure functions over
arrays. Nothing outside ``driftmon.kernels`` imports numba: orchestration code
calls the checked public wrappers (``driftmon.divergence``,
``driftmon.binning``), which validate dtype, shape and ranges before any JIT
code runs.
"""

from __future__ import annotations

import importlib
import pkgutil


def warm_up_all() -> None:
    """Compile (or load from numba's cache) every kernel, calling each module's ``warm_up``.

    The daemon calls this before it reports ready, so no request pays for
    compilation; the container image calls it at build time to fill the cache.
    """
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        warm_up = getattr(module, "warm_up", None)
        if callable(warm_up):
            warm_up()
