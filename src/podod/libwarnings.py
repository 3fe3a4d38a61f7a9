"""Libraries' warnings stay out of a user's terminal and out of the daemon's log.

A library's deprecation notice (asyncssh importing DSA support under a newer cryptography
printed four ``CryptographyDeprecationWarning`` lines before ``podod db check``'s sentence) is
addressed to podod's developers, not to the administrator reading podod's output. Every entry
point (``podod``, ``podoctl``, ``make demo``) calls :func:`hide_library_warnings` first. A
developer who wants to see them asks Python as usual (``python -W default`` or
``PYTHONWARNINGS=default``), and that choice is left alone; the test suite sees them too,
since pytest installs its own filters.
"""

from __future__ import annotations

import sys
import warnings


def hide_library_warnings() -> None:
    """Ignore every warning unless the user asked for warnings with -W or PYTHONWARNINGS.

    All of them, not only DeprecationWarning: cryptography's deprecation warnings subclass
    UserWarning, which Python shows by default."""
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
