"""A loaded prior made cheaper to run in the analysis, with the same numbers.

Guidance spends nearly all of an analysis differentiating the decoder (an L-BFGS evaluation is one
forward and one backward pass), and on the sphere a fifth of that went to the pole padding of every
convolution: ``Geometry.pad`` builds the padded grid from flips, rolls, a concatenation and a
circular pad, whose backward passes allocate and zero a full-size gradient for each piece before
summing them. ``SpherePad`` writes the same padded grid into one buffer and folds its gradient back
with a few in-place additions (10 % of a decoder pass at 32x64, 18 % at 64x128, measured by
benchmarks/losda_speed.py).

The forward values are copies of the input, identical to ``Geometry.pad``'s; the gradient adds the
same terms, possibly in another order (float round-off). Training keeps ``Geometry.pad``: the
networks' modules, and so the code version that names a trained checkpoint, are unchanged.
"""

from __future__ import annotations

import torch

from .geometry import GeoConv, Geometry


class SpherePad(torch.autograd.Function):
    """``Geometry.pad`` on a sphere: circular in longitude; beyond a pole, the rows on the other
    side of it, turned half way round (``roll(width // 2)``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: int) -> torch.Tensor:
        ctx.p = p
        h, w = x.shape[-2:]
        half = w // 2
        out = x.new_empty((*x.shape[:-2], h + 2 * p, w + 2 * p))
        inner = out[..., :, p:p + w]
        inner[..., p:p + h, :] = x
        for rows, source in ((slice(0, p), x[..., :p, :].flip(-2)), (slice(p + h, h + 2 * p), x[..., -p:, :].flip(-2))):
            inner[..., rows, half:] = source[..., :w - half]  # column c takes column c - half (mod w)
            inner[..., rows, :half] = source[..., w - half:]
        out[..., :, :p] = inner[..., :, w - p:]
        out[..., :, p + w:] = inner[..., :, :p]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.p
        h, w = grad.shape[-2] - 2 * p, grad.shape[-1] - 2 * p
        half = w // 2
        inner = grad[..., :, p:p + w].clone()
        inner[..., :, w - p:] += grad[..., :, :p]
        inner[..., :, :p] += grad[..., :, p + w:]
        out = inner[..., p:p + h, :].clone()
        north = torch.cat([inner[..., :p, half:], inner[..., :p, :half]], dim=-1)  # undo the half turn
        south = torch.cat([inner[..., p + h:, half:], inner[..., p + h:, :half]], dim=-1)
        out[..., :p, :] += north.flip(-2)
        out[..., -p:, :] += south.flip(-2)
        return out, None


class SpherePadding:
    """A sphere geometry whose ``pad`` is ``SpherePad``; everything else is the wrapped one's."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        return x if p == 0 else SpherePad.apply(x, p)

    def __getattr__(self, name):
        return getattr(self.geometry, name)


def faster_padding(prior) -> None:
    """Give every sphere convolution of ``prior``'s networks ``SpherePad`` (in place)."""
    for network in (prior.vae, prior.denoiser):
        for module in network.modules():
            if isinstance(module, GeoConv) and module.geometry.kind == "sphere" \
                    and not isinstance(module.geometry, SpherePadding):
                module.geometry = SpherePadding(module.geometry)
