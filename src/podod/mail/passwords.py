"""Password hashing for Dovecot and SOGo: ``{SHA512-CRYPT}$6$rounds=70000$...`` by default.

SHA512-CRYPT uses the system's C crypt when present (stdlib ``crypt`` on 3.11/3.12,
``crypt_r`` on 3.13+), about twice as fast as libpass's pure-Python backend, after checking
once that its output verifies with libpass; otherwise libpass. Neither releases the GIL, so
hashing runs in a process pool: off the event loop, and parallel across cores for bulk work.
BLF-CRYPT and ARGON2ID come from libpass (ARGON2ID needs argon2-cffi).

A password is at most :data:`MAX_CHARS` characters without control characters, and fits
what its scheme can hash (:data:`MAX_BYTES`): libxcrypt answers a longer one with its failure
token ``*0``, which would lock the mailbox out. Every hash is checked in the worker that made
it (:func:`check_hash`: its scheme's form, never a failure token) before it is handed back;
the C crypt itself is checked once per process against libpass (:func:`c_backend_ok`), so
a hash is not computed a second time to verify it (docs/mail.md, "Passwords").
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import string
import unicodedata
import warnings
from typing import TYPE_CHECKING, Any

from podod.errors import PododError, UsageError, ValidationError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

PREFIX = {"SHA512-CRYPT": "{SHA512-CRYPT}", "BLF-CRYPT": "{BLF-CRYPT}",
          "ARGON2ID": "{ARGON2ID}"}
_SALT_CHARS = string.ascii_letters + string.digits + "./"
MAX_CHARS = 256  # far beyond any passphrase; Dovecot and SOGo take it in one line
# What each scheme hashes, in UTF-8 bytes: libxcrypt refuses 512 bytes and more (it returns
# "*0"); bcrypt uses only the first 72 (libpass refuses more); Argon2 takes any length.
MAX_BYTES = {"SHA512-CRYPT": 511, "BLF-CRYPT": 72, "ARGON2ID": 4 * MAX_CHARS}
# What a hash of each crypt(3) scheme looks like (also the check of pre-hashed imports): a
# failure token, a truncated or empty hash never has its scheme's form.
HASH_FORMS = {
    "SHA512-CRYPT": re.compile(r"\$6\$(rounds=\d{4,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"),
    "SHA256-CRYPT": re.compile(r"\$5\$(rounds=\d{4,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}"),
    "MD5-CRYPT": re.compile(r"\$1\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}"),
    "BLF-CRYPT": re.compile(r"\$2[abxy]\$\d\d\$[./0-9A-Za-z]{53}"),
    "ARGON2I": re.compile(r"\$argon2i\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"),
    "ARGON2ID": re.compile(r"\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+"
                           r"\$[A-Za-z0-9+/]+"),
}
_IDENT = {"SHA512-CRYPT": ("$6$",), "BLF-CRYPT": ("$2y$",), "ARGON2ID": ("$argon2id$",)}


def _c_crypt() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt as module  # Python 3.11/3.12
        except ImportError:
            try:
                import crypt_r as module  # type: ignore[no-redef]
            except ImportError:
                return None
    return module


_C_OK: bool | None = None


def c_backend_ok() -> bool:
    """The C crypt exists and agrees with libpass (checked once per process)."""
    global _C_OK
    if _C_OK is None:
        module = _c_crypt()
        _C_OK = False
        if module is not None:
            from passlib.hash import sha512_crypt

            salt = "podod0123456789a"
            out = module.crypt("check-Ä-password", f"$6$rounds=5000${salt}$")
            _C_OK = bool(out) and sha512_crypt.verify("check-Ä-password", out)
    return _C_OK


def check_bounds(password: str, scheme: str) -> None:
    """A password the scheme can hash as given: not too long, no control characters."""
    if len(password) > MAX_CHARS:
        raise UsageError(f"the password is too long: at most {MAX_CHARS} characters are "
                         f"allowed, not {len(password)}")
    for char in password:
        if unicodedata.category(char) in ("Cc", "Cs"):  # NUL, ESC, DEL, C1; lone surrogates
            raise UsageError(f"the password must not contain control characters such as "
                             f"U+{ord(char):04X}")
    size, most = len(password.encode()), MAX_BYTES.get(scheme, MAX_CHARS)
    if size > most:
        raise UsageError(f"the password is too long for {scheme}: at most {most} bytes in "
                         f"UTF-8 are allowed, not {size}")


def check_hash(stored: str, scheme: str, rounds: int | None = None) -> None:
    """Raise unless ``stored`` is a hash as ``scheme`` writes it: its ``{SCHEME}`` prefix and
    identifier, the scheme's form (:data:`HASH_FORMS`: salt and digest of their lengths and
    alphabet), and for SHA512-CRYPT the ``rounds`` asked for; never a crypt failure token
    (``*0``, ``*1``), nothing empty or cut short. It does not hash again: the C crypt was
    checked against libpass once per process (:func:`c_backend_ok`), and libpass and
    argon2-cffi compute what they return."""
    prefix = PREFIX.get(scheme, "")
    digest = stored.removeprefix(prefix) if prefix else ""
    form = HASH_FORMS.get(scheme)
    sound = bool(prefix) and stored.startswith(prefix) and digest.startswith(
        _IDENT[scheme]) and form is not None and form.fullmatch(digest) is not None
    if sound and scheme == "SHA512-CRYPT" and rounds is not None:
        given = 5000 if "$rounds=" not in digest else int(digest.split("$")[2][7:])
        sound = given == max(1000, min(999_999_999, rounds))
    if not sound:
        shown = digest[:2] if digest.startswith("*") else "a hash of the wrong form"
        raise PododError(f"hashing the password with {scheme or 'no scheme'} failed (it gave "
                         f"{shown or 'nothing'}); nothing was changed", code="hash-failed")


def hash_password(password: str, scheme: str = "SHA512-CRYPT", rounds: int = 70000,
                  backend: str = "auto") -> str:
    """Blocking; run it in :func:`hash_async`'s pool from the daemon. The hash's form is
    checked (:func:`check_hash`) here, in the worker, before it is returned."""
    if scheme not in PREFIX:
        raise ValidationError(f"unknown password scheme {scheme}")
    check_bounds(password, scheme)
    if scheme == "SHA512-CRYPT":
        if backend in ("auto", "c") and c_backend_ok():
            salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
            module = _c_crypt()
            digest = module.crypt(password, f"$6$rounds={rounds}${salt}$")
        else:
            from passlib.hash import sha512_crypt

            digest = sha512_crypt.using(rounds=rounds, salt_size=16).hash(password)
    elif scheme == "BLF-CRYPT":
        from passlib.hash import bcrypt

        cost = max(4, min(31, rounds if rounds < 32 else 10))
        digest = bcrypt.using(rounds=cost, ident="2y").hash(password)
    elif scheme == "ARGON2ID":
        from passlib.hash import argon2

        digest = argon2.using(type="ID").hash(password)
    stored = PREFIX[scheme] + (digest or "")
    check_hash(stored, scheme, rounds if scheme == "SHA512-CRYPT" else None)
    return stored


def verify_password(password: str, stored: str) -> bool:
    from passlib.context import CryptContext

    digest = stored.split("}", 1)[1] if stored.startswith("{") else stored
    context = CryptContext(schemes=["sha512_crypt", "bcrypt", "argon2", "md5_crypt"])
    try:
        return bool(context.verify(password, digest))
    except (ValueError, TypeError):
        return False


def check_policy(password: str, min_length: int, scheme: str = "SHA512-CRYPT") -> None:
    if len(password) < min_length:
        raise ValidationError(f"the password is too short: at least {min_length} characters "
                              "are required")
    if password.strip() != password or "\n" in password:
        raise ValidationError("the password must not start or end with spaces or contain "
                              "line breaks")
    check_bounds(password, scheme)
    if len(set(password)) < 4:
        raise ValidationError("the password is too weak: it repeats too few characters")


def generate_password(length: int = 20) -> str:
    """Letters, digits and a few symbols that survive shells and chat clients; the first
    is a letter or digit (``doveadm auth test user -3x...`` and most command-line tools
    would read a leading ``-`` as an option)."""
    alnum = string.ascii_letters + string.digits
    alphabet = alnum + "-_.+="
    while True:
        candidate = secrets.choice(alnum) + "".join(secrets.choice(alphabet)
                                                    for _ in range(length - 1))
        if (any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
                and any(c.isdigit() for c in candidate)):
            return candidate


def _die_with_parent(parent: int) -> None:
    """A worker ends with the daemon, also when the daemon is killed (kill -9): it would
    otherwise live on, holding copies of the daemon's listening socket, and a restarted
    podod would find the socket still answering. Linux's parent-death signal does it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the daemon died before the signal was asked for
        os._exit(1)
    _close_inherited_sockets()


def _close_inherited_sockets() -> None:
    """A forked worker closes its copies of the daemon's sockets (it needs none: it talks
    to the daemon through pipes). A copy of an SSH tunnel's listener kept the tunnel's local
    port taken after the server came back, so the tunnel could not listen on it again and
    the mail database behind it stayed unreachable; copies of database connections kept
    them half-open."""
    import stat

    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd < 3:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            continue


class HashingPool:
    """Worker processes that hash passwords (the daemon's ``hashing`` component).

    The C crypt and libpass both hold the GIL, so threads would serialise: processes give
    one hash per core at a time, and the event loop never waits on a hash. Workers are
    forked on first use (fast, and no helper processes such as a fork server stay
    behind); they run only :func:`hash_password`, which touches no lock another thread of
    the daemon could hold. :meth:`stop` shuts them down with the daemon.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # multiprocessing comes with the first hash, not with podod's start-up
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("fork"),
                initializer=_die_with_parent, initargs=(os.getpid(),))
        return self._executor

    async def hash(self, password: str, scheme: str = "SHA512-CRYPT", rounds: int = 70000,
                   backend: str = "auto") -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor(), hash_password, password, scheme,
                                          rounds, backend)

    async def hash_many(self, passwords: list[str], scheme: str = "SHA512-CRYPT",
                        rounds: int = 70000, backend: str = "auto") -> list[str]:
        """Bulk work (imports): every worker busy at once, results in input order."""
        return list(await asyncio.gather(
            *(self.hash(p, scheme, rounds, backend) for p in passwords)))

    def worker_pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    def shutdown(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await asyncio.to_thread(self.shutdown)


_DEFAULT = HashingPool()


def default_pool() -> HashingPool:
    return _DEFAULT


async def hash_async(password: str, scheme: str = "SHA512-CRYPT", rounds: int = 70000) -> str:
    """Hash in a worker process: the event loop never blocks on it."""
    return await _DEFAULT.hash(password, scheme, rounds)
