"""The packages whose internals we correct are installed at exactly the version the corrections were written for.

streams/faust_fixes.py replaces pieces of faust-streaming, aiokafka and mode-streaming; a
correction written against one version can silently stop applying (or break) on another. So
pyproject.toml pins the three exactly, requirements.lock agrees, and the venv has them.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATCHED = ("faust-streaming", "aiokafka", "mode-streaming")
EXACT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^;\s]+)\s*(?:;.*)?")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _exact_pins(requirements: list[str]) -> dict[str, str]:
    return {_norm(m[1]): m[2] for r in requirements if (m := EXACT.fullmatch(r.strip()))}


def _pyproject_pins() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return _exact_pins(tomllib.load(f)["project"]["dependencies"])


def _lock_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return _exact_pins([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")])


@pytest.mark.parametrize("package", PATCHED)
def test_patched_package_is_pinned_exactly_and_installed_at_that_version(package: str) -> None:
    pins = _pyproject_pins()
    assert package in pins, f"pyproject.toml must pin {package} with == (streams/faust_fixes.py patches it)"
    installed = version(package)
    assert installed == pins[package], (
        f"{package} {installed} is installed but streams/faust_fixes.py corrects the internals of "
        f"{pins[package]}: re-check every correction listed in docs/decisions/ (each names the upstream "
        f"code it replaces), then update the pin"
    )


@pytest.mark.parametrize("package", PATCHED)
def test_lock_agrees_with_the_pin_of_each_patched_package(package: str) -> None:
    pinned, locked = _pyproject_pins().get(package), _lock_pins().get(package)
    assert locked == pinned, (
        f"requirements.lock has {package}=={locked} but pyproject.toml pins {pinned}: "
        "install the pinned version, then run `make lock`"
    )


def test_every_exact_pin_of_pyproject_is_in_the_lock_at_the_same_version() -> None:
    pins, lock = _pyproject_pins(), _lock_pins()
    assert pins, "pyproject.toml has no == pins: the reader of its dependencies is broken"
    drift = {name: (v, lock.get(name)) for name, v in pins.items() if lock.get(name) != v}
    assert not drift, f"pyproject pin vs requirements.lock (run `make lock`): {drift}"


def test_the_lock_has_no_platform_junk_or_the_project_itself() -> None:
    lock = _lock_pins()
    assert not {"pkg-resources", "deckstream", "pip", "setuptools", "wheel"} & set(lock)
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    odd = [ln for ln in lines if ln.strip() and not ln.startswith("#") and not EXACT.fullmatch(ln)]
    assert not odd, f"every line of requirements.lock is name==version (no -e, URLs or paths): {odd}"
