"""Registers the built-in models, exactly as a third-party plugin would."""

from ..hookspecs import hookimpl


@hookimpl
def da_harness_register(registry):
    from .linear import LinearGaussian
    from .lorenz96 import Lorenz96

    registry.add_model(LinearGaussian)
    registry.add_model(Lorenz96)
    from .sw import ShallowWater, register_observation_kinds

    registry.add_model(ShallowWater)
    register_observation_kinds(registry)
