"""The JAX port imports no torch, and the PyTorch package imports no JAX (as the docs say).

Checked in fresh interpreters, since this test session has both loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PORT_MODULES = [
    "iai_prob.numpyro",
    "iai_prob.models",
    "iai_prob.models.numpyro_backend",
    "iai_prob.numpyro.pretrained",
    "iai_prob.numpyro.sources",
    "iai_prob.numpyro.sharding",
]


def _loaded_after(imports: list[str], package: str) -> list[str]:
    """The modules of ``package`` loaded by a fresh interpreter after ``imports``."""
    code = "import json, sys\n" + "".join(f"import {name}\n" for name in imports)
    code += f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == {package!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize(("imports", "forbidden"), [(PORT_MODULES, "torch"), (["iai_prob"], "jax")])
def test_one_backend_does_not_pull_in_the_other(imports, forbidden):
    assert _loaded_after(imports, forbidden) == []
