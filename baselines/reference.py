"""The floors every real method must beat: no assimilation, and the climatological mean."""

from __future__ import annotations

import torch

from interfaces.assimilator import Assimilator


class FreeRun(Assimilator):
    name = "free"
    description = "no assimilation: the analysis is the background forecast"
    preferred_members = 1
    devices = None  # computes nothing

    def assimilate(self, background, observations, operator):
        return background.clone()


class Climatology(Assimilator):
    name = "climatology"
    description = "the climatological mean, whatever the observations"
    preferred_members = 1
    devices = None  # computes nothing: a CPU mean, as the harness expects it back

    def prepare(self, context):
        super().prepare(context)
        self.mean = context.climatology.to(torch.float64).mean(0)

    def assimilate(self, background, observations, operator):
        return self.mean.to(background.dtype).expand_as(background).clone()
