"""Every key of the training config with hostile values: a config or one DiffusionCTError, never another exception."""

from __future__ import annotations

import numpy as np
import pytest

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError

HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1e308", "-1e-308", "abc", "[]", "[1, -2]", "{a: 1}", "true", "null", "''",
           "1.5", "99999999999999999999"]


def _keys(data: dict, prefix: str = "") -> list[str]:
    out = []
    for name, value in data.items():
        out += _keys(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"]
    return out


KEYS = _keys(RunConfig().to_dict())


@pytest.mark.parametrize("key", KEYS)
def test_every_key_refuses_hostile_values_in_one_line(key):
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    for value in rng.permutation(HOSTILE):
        try:
            config = RunConfig.load(overrides=[f"{key}={value}"])
        except DiffusionCTError as exc:
            assert "\n" not in str(exc) and key.split(".")[-1] in str(exc) or "--set" in str(exc), (key, value, str(exc))
        else:
            config.validate()  # what loads is valid, and saved it reads back the same
            assert RunConfig.from_saved(config.to_dict()).to_dict() == config.to_dict(), (key, value)
