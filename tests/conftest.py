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

