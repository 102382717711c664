"""interfaces.allocator: freed tensor buffers are kept for reuse instead of being mapped and
zero-filled again (the page faults that cost a quarter of a LO-SDA analysis's CPU time)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from interfaces.allocator import keep_freed_memory

# What guidance does: a decoder pass and its gradient (batch 8, 32x64 sphere), over and over.
CHURN = """
import json, resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from interfaces.allocator import keep_freed_memory
    assert keep_freed_memory()
from losda_plugin.geometry import Geometry
from losda_plugin.vae import VAE
torch.manual_seed(0)
vae = VAE(Geometry("sphere", (32, 64), 3, True), [16, 32], 8, torch.zeros(3, 32, 64), torch.ones(3, 32, 64))
vae.requires_grad_(False)
def rounds(n):
    for _ in range(n):
        z = torch.randn(8, *vae.latent_shape, requires_grad=True)
        torch.autograd.grad(vae.decode(z).pow(2).sum(), z)
rounds(2)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt thresholds are glibc's")


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc
def test_freed_buffers_are_reused_without_page_faults():
    default, kept = page_faults("default"), page_faults("keep")
    # Measured: some 33,000 page faults by default, some 800 with the thresholds set.
    assert 5 * kept < default


@glibc
def test_setting_the_thresholds_is_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
