"""A library's warnings never reach an administrator: not on podod's or podoctl's terminal,
not in the daemon's log (issue 11: asyncssh's import printed four cryptography deprecation
warnings before 'podod db check's sentence on a machine whose resolver picked newer
versions). Here a plugin plays the library: it warns while it is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testbed.daemon import DaemonProcess, base_config, write_config

Start = Callable[..., DaemonProcess]
NOTICE = "noisy-library-notice"
NOISY_PLUGIN = f'''
import warnings


class CryptographyLikeDeprecation(UserWarning):
    """cryptography's deprecation warnings subclass UserWarning, shown by default."""


warnings.warn("{NOTICE}: DSA is deprecated", CryptographyLikeDeprecation)
warnings.warn("{NOTICE}: an old API", DeprecationWarning)
warnings.warn("{NOTICE}: will change", FutureWarning)


def setup(registry):
    pass
'''


def noisy_plugins(tmp_path: Path) -> dict[str, object]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "noisy.py").write_text(NOISY_PLUGIN)
    return {"dirs": [str(folder)], "entry_points": False}


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return {**env, **extra}


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_check_config_shows_only_its_own_words(tmp_path: Path) -> None:
    path = write_config(tmp_path / "podod.yaml",
                        base_config(tmp_path, plugins=noisy_plugins(tmp_path)))
    done = check_config(path, quiet_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{path}: OK\n"
    assert done.stderr == ""
    # A developer who asks for warnings still gets them: the filter only sets the default.
    asked = check_config(path, quiet_env(PYTHONWARNINGS="default"))
    assert asked.returncode == 0 and NOTICE in asked.stderr


def test_daemon_log_and_podoctl_stay_clean(start_daemon: Start, tmp_path: Path) -> None:
    daemon = start_daemon(_env=quiet_env(), plugins=noisy_plugins(tmp_path))
    done = daemon.podoctl("status")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    log = daemon.log()
    assert "noisy" in done.stdout  # the plugin was loaded: its warnings had their chance
    assert NOTICE not in log and "Warning" not in log

