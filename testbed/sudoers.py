"""A sudoers rule for a test session: the line podod renders for the maildir server
(``podoctl maildir sudoers``), installed as /etc/sudoers.d/podod-test-<pid>-<random> so the
test bed's SSH user runs exactly podod's maildir commands as vmail, as in production.

sudoers has no per-process configuration file, so this is the one test-bed file outside a
temp folder: it is checked with ``visudo -cf`` before it goes in (a broken file would break
sudo for the whole machine), named per session (engineers' runs do not collide), and
removed by :meth:`SudoersRule.remove`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

SUDOERS_D = Path("/etc/sudoers.d")


class SudoersRule:
    def __init__(self, text: str) -> None:
        if shutil.which("sudo") is None or shutil.which("visudo") is None:
            raise FileNotFoundError("sudo not found: install Debian's sudo (make deps)")
        # No '.' in the name: sudo ignores files in sudoers.d whose names contain one.
        self.path = SUDOERS_D / f"podod-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.text = text.rstrip("\n") + "\n"

    def install(self) -> SudoersRule:
        SUDOERS_D.mkdir(mode=0o755, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".podod-test-", dir=SUDOERS_D)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.text)
            os.chmod(temp, 0o440)
            check = subprocess.run(["visudo", "-cqf", temp], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"visudo refuses the rule {self.text!r}: "
                                   f"{(check.stderr or check.stdout).strip()}")
            os.rename(temp, self.path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return self

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SudoersRule:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()
