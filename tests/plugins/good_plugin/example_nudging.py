"""A complete third-party plugin: Newtonian relaxation (nudging) toward the observations."""

import torch

from interfaces.assimilator import Assimilator
from interfaces.hookspecs import hookimpl


class Nudging(Assimilator):
    name = "nudging"
    description = "relax each member toward the observations: x + g H^T (y - H x)"
    defaults = {"gain": 0.5}
    preferred_members = 1

    def assimilate(self, background, observations, operator):
        flat = background.reshape(background.shape[0], -1).clone().requires_grad_(True)
        misfit = 0.5 * ((observations.values - operator.apply(flat)) ** 2).sum()
        (gradient,) = torch.autograd.grad(misfit, flat)  # = -H^T (y - H x) for every member
        return (flat - self.options["gain"] * gradient).detach().reshape(background.shape)


@hookimpl
def da_harness_register(registry):
    registry.add_assimilator(Nudging)
