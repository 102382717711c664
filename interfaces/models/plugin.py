"""Registers the built-in models, exactly as a third-party plugin would."""

from ..hookspecs import hookimpl


@hookimpl
def da_harness_register(registry):
    from .linear import LinearGaussian
    from .lorenz96 import Lorenz96

    registry.add_model(LinearGaussian)
    registry.add_model(Lorenz96)
    # The sphere model imports torch-harmonics (seconds): registered lazily, imported on use.
    registry.add_model(
        "interfaces.models.sw:ShallowWater", name="sw",
        description="forced-dissipative shallow water on the sphere (h, u, v; Gauss-Legendre grid), 6-h cycles",
    )
    registry.add_observation_kind(
        "stations", "interfaces.models.sw:stations",
        "N off-grid stations uniform on the sphere, bilinear interpolation: stations:N",
    )
