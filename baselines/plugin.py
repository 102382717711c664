"""Registers the classical baselines through the same hook a third party uses."""

from interfaces.hookspecs import hookimpl


@hookimpl
def da_harness_register(registry):
    from .reference import Climatology, FreeRun

    registry.add_assimilator(FreeRun)
    registry.add_assimilator(Climatology)
