"""Declared dependencies: every import is declared, and every lower bound is what the z2jh lane runs.

The package is installed into the Zero-to-JupyterHub 4.4.0 hub image, where only what apex-hub declares
(plus the image's own packages) exists; an undeclared import works in the suite's venv and fails there.
The lower bounds are the image's versions (ci/constraints/z2jh-4.4.0.txt), which the z2jh lane tests.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "ci" / "constraints" / "z2jh-4.4.0.txt"
#: Imported only where an optional extra or the test suite provides them, each behind a clear message.
OPTIONAL = {
    "kubernetes_validate",
    "jsonschema",
    "referencing",
}  # the last two: kubesim validates with them when kubernetes-validate is there


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    return {canonical(r.name): r for r in reqs}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    """Top-level modules imported anywhere in apex_hub (absolute imports only)."""
    found = set()
    for path in (ROOT / "apex_hub").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - {"apex_hub"}


def test_every_third_party_import_is_declared():
    declared = set(requirements())
    dists = packages_distributions()
    missing = {}
    for module in sorted(imported_modules()):
        if module in sys.stdlib_module_names or module in OPTIONAL:
            continue
        owners = {canonical(d) for d in dists.get(module, [])}
        assert owners, f"{module} is imported by apex_hub but no installed distribution provides it"
        if not owners & declared:
            missing[module] = sorted(owners)
    # what a declared package brings along is not enough: the image may carry another version of it
    assert not missing, f"imported but not in pyproject.toml [project] dependencies: {missing}"


def test_lower_bounds_are_the_z2jh_image_versions():
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    for name, req in requirements().items():
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert lower, f"{name} has no lower bound"
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}: the z2jh lane would not test it"
        # the pinned version is the bound, to the bound's precision (>=5.5 is tested as 5.5.0)
        assert pins[name] == lower[0] or pins[name].startswith(lower[0] + "."), (
            f"{name}: lower bound {lower[0]} is not the version the z2jh lane tests ({pins[name]})"
        )


def test_kubespawner_is_capped_below_its_next_major():
    """APExSpawner overrides private KubeSpawner methods: a new major must be tested before it is allowed."""
    spec = requirements()["jupyterhub-kubespawner"].specifier
    assert any(s.operator == "<" for s in spec), spec
