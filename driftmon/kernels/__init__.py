"""Every numba kernel of driftmon lives in this package.

The modules here import only numpy and numba and hold pure functions over
arrays. Nothing outside ``driftmon.kernels`` imports numba: orchestration code
calls the checked public wrappers (``driftmon.divergence``,
``driftmon.binning``), which validate dtype, shape and ranges before any JIT
code runs.
"""
