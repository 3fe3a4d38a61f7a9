"""podod: one daemon for mail administrators."""

from podod import compiled as _compiled

__version__ = "0.1.0"

# The log parser's modules are compiled with mypyc at install time; PODOD_PURE_PYTHON=1
# runs their Python source instead, and so does a checkout whose compiled modules are older
# than their source (an edit not compiled yet: podod.compiled).
if _compiled.wanted_pure() or _compiled.stale():
    _compiled.use_source()
