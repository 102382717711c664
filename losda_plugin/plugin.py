"""Registers the latent score-based methods: losda, dps and l3dvar (one shared trained prior)."""

from interfaces.hookspecs import hookimpl


@hookimpl
def da_harness_register(registry):
    from .methods import DPS, L3DVar, LOSDA

    for cls in (LOSDA, DPS, L3DVar):
        registry.add_assimilator(cls)
