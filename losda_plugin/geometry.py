"""Grid geometry for the neural networks: how a state's spatial axes wrap.

Two kinds are enough for the testbeds:
- ``ring``: one periodic axis (Lorenz-96), circular padding;
- ``sphere``: a latitude-longitude grid, circular in longitude; beyond a pole the padding takes
  the rows on the other side of the pole (same distance from it, longitude shifted by 180
  degrees), which is where a stencil crossing the pole really lands.

Every convolution in this package pads through ``Geometry.pad`` and then convolves unpadded, so
the same network code serves both kinds.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Geometry:
    def __init__(self, kind: str, spatial_shape: tuple[int, ...], channels: int, has_channel_axis: bool):
        if kind not in ("ring", "sphere"):
            raise ValueError(f"unknown geometry '{kind}'")
        self.kind = kind
        self.spatial_shape = tuple(spatial_shape)
        self.channels = channels
        #: False for single-variable models whose states carry no channel axis (Lorenz-96).
        self.has_channel_axis = has_channel_axis

    @classmethod
    def of(cls, model) -> "Geometry":
        spatial = tuple(model.spatial_shape)
        kind = "ring" if len(spatial) == 1 else "sphere"
        if len(spatial) > 2:
            raise ValueError(f"model '{model.name}' has {len(spatial)} spatial axes; only 1 (ring) or 2 (sphere) are supported")
        return cls(kind, spatial, len(model.variables), model.has_channels)

    @property
    def dims(self) -> int:
        return len(self.spatial_shape)

    def to_net(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, *state_shape) -> (batch, channels, *spatial)."""
        return x if self.has_channel_axis else x.unsqueeze(1)

    def from_net(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.has_channel_axis else x.squeeze(1)

    def pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        if p == 0:
            return x
        if self.kind == "ring":
            return F.pad(x, (p, p), mode="circular")
        width = x.shape[-1]
        # Across a pole: mirror the rows and turn half way round in longitude.
        north = x[..., :p, :].flip(-2).roll(width // 2, -1)
        south = x[..., -p:, :].flip(-2).roll(width // 2, -1)
        x = torch.cat([north, x, south], dim=-2)
        return F.pad(x, (p, p, 0, 0), mode="circular")

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x, 2) if self.dims == 1 else F.avg_pool2d(x, 2)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def latent_shape(self, latent_channels: int, levels: int) -> tuple[int, ...]:
        return (latent_channels, *(s // 2 ** levels for s in self.spatial_shape))

    def check_levels(self, levels: int) -> None:
        for s in self.spatial_shape:
            if s % 2 ** levels:
                raise ValueError(f"grid {self.spatial_shape} cannot be halved {levels} times")


class GeoConv(nn.Module):
    """A convolution whose padding follows the geometry."""

    def __init__(self, geometry: Geometry, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.geometry = geometry
        self.pad = kernel // 2
        conv = nn.Conv1d if geometry.dims == 1 else nn.Conv2d
        self.conv = conv(cin, cout, kernel)

    def forward(self, x):
        return self.conv(self.geometry.pad(x, self.pad))


class ResBlock(nn.Module):
    """Two convolutions with a skip; an optional embedding modulates it (FiLM: scale and shift)."""

    def __init__(self, geometry: Geometry, cin: int, cout: int, emb: int = 0, kernel: int = 3):
        super().__init__()
        self.conv1 = GeoConv(geometry, cin, cout, kernel)
        self.conv2 = GeoConv(geometry, cout, cout, kernel)
        self.skip = nn.Identity() if cin == cout else (nn.Conv1d if geometry.dims == 1 else nn.Conv2d)(cin, cout, 1)
        self.film = nn.Linear(emb, 2 * cout) if emb else None
        self.dims = geometry.dims

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(x))
        if self.film is not None:
            scale, shift = self.film(emb).chunk(2, dim=-1)
            shape = (*scale.shape, *([1] * self.dims))
            h = h * (1 + scale.view(shape)) + shift.view(shape)
        h = self.conv2(F.silu(h))
        return self.skip(x) + h
