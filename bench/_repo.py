"""Benchmarks run as ``python bench/NAME.py`` from a checkout: put the repository's top folder
on sys.path so they can import the test harnesses in ``testbed/`` (not a shipped package)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)
