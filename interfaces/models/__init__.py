"""Dynamical systems the harness cycles. See base.Model for the contract."""

from .base import Model

__all__ = ["Model"]
