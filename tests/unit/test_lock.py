"""The committed lock is what the tests run on (issue 11: a fresh machine's resolver picked a
newer cryptography than the previous machine's cache, and the suite went red).

Fails when a dependency is added to pyproject.toml without 'make lock', when the lock pins a
version outside pyproject's range, or when this environment was installed without the lock
(a missing install step would otherwise hide behind a green run)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def locked(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: '{line}' is not an exact pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def declared() -> list[Requirement]:
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    names = (project["project"]["dependencies"]
             + project["project"]["optional-dependencies"]["test"]
             + project["build-system"]["requires"])
    return [Requirement(name) for name in names]


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    pins = locked(REPO / "constraints.txt")
    for req in declared():
        if req.marker is not None and not req.marker.evaluate():
            continue  # e.g. crypt-r, only for Python 3.13 and later
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not in constraints.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}")


def test_this_environment_was_installed_from_the_lock() -> None:
    pins = locked(REPO / "constraints.txt")
    wrong = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in pins and dist.version != pins[name]:
            wrong.append(f"{name} {dist.version} (locked {pins[name]})")
    assert not wrong, "installed without the lock: " + ", ".join(sorted(wrong))


def test_synapse_lock_pins_the_makefiles_release() -> None:
    pins = locked(REPO / "constraints-synapse.txt")
    makefile = (REPO / "Makefile").read_text()
    assert f"SYNAPSE_VERSION ?= {pins['matrix-synapse']}\n" in makefile
