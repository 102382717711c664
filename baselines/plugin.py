"""Registers the classical baselines through the same hook a third party uses."""

from interfaces.hookspecs import hookimpl


@hookimpl
def da_harness_register(registry):
    from .enkf import EnKF
    from .ensf import EnSF
    from .letkf import LETKF
    from .reference import Climatology, FreeRun
    from .var3d import Var3D

    registry.add_assimilator(FreeRun)
    registry.add_assimilator(Climatology)
    registry.add_assimilator(Var3D)
    registry.add_assimilator(EnKF)
    registry.add_assimilator(LETKF)
    registry.add_assimilator(EnSF)
