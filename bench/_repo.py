"""Benchmarks run as ``python bench/NAME.py`` from a checkout: put the repository's top folder
on sys.path so they can import the test harnesses in ``testbed/`` (not a shipped package)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)


def save_result(name: str, result: object) -> Path:
    """Write a benchmark's figures to .bench/NAME.json (``make bench`` keeps them there)."""
    import json

    folder = Path(ROOT) / ".bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def write_config(root: Path, config: dict[str, object], *, init: bool = True) -> Path:
    """Write ``config`` as ROOT/podod.yaml and, with ``init``, create the mail schema in its
    mail database(s) with ``podod db init`` (its stderr and exit 1 when that fails)."""
    import subprocess

    import yaml

    path = root / "podod.yaml"
    path.write_text(yaml.safe_dump(config))
    if init:
        done = subprocess.run([sys.executable, "-m", "podod.cli", "db", "init", "-c",
                               str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(1)
    return path
