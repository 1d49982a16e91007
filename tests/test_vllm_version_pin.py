"""The vLLM plugin's version pin (``zaya_ops.integrations.vllm.check_vllm_version``): runs without vLLM.

The plugin reads vLLM internals, so it registers only with the vLLM range it is tested with and refuses
any other with an error naming that range (tests/test_vllm_plugin.py checks ``register()`` itself).
"""

from __future__ import annotations

import re

import pytest

from zaya_ops.integrations.vllm import SUPPORTED_VLLM, check_vllm_version


@pytest.mark.parametrize("version", ["0.32.0", "0.32.3+cpu", "0.32.1.dev4+g0123abc"])
def test_accepts_the_tested_range(version):
    check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.31.9", "0.33.0", "0.33.0rc1", "1.0.0", "0.3.2", "dev", ""])
def test_refuses_other_versions_naming_the_range(version):
    with pytest.raises(RuntimeError, match=re.escape(f"supports vLLM {SUPPORTED_VLLM}")) as e:
        check_vllm_version(version)
    assert f"vLLM {version} is installed" in str(e.value)
