"""Shared pytest configuration: the devices the op tests run on.

``DEVICES`` is ["cpu"], plus "cuda" when torch sees a GPU (CUDA or ROCm: both are "cuda" to torch).
Tests take the ``device`` fixture (or parametrize over ``DEVICES``) so the same tests cover every
backend of the machine they run on.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each available device in turn."""
    return request.param



@pytest.fixture(scope="module")
def one_cpu_thread():
    """Run a module with one CPU thread (tiny models: faster, and immune to oversubscription), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
