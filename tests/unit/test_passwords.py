"""Password hashing: the C crypt agrees with libpass byte for byte, every scheme verifies,
the policy speaks plainly, and the hashing pool runs in parallel processes it cleans up."""

from __future__ import annotations

import os
import re
import types

import psutil
import pytest
from passlib.hash import sha512_crypt

from podod.config import parse_config
from podod.errors import ConfigError, PododError, UsageError, ValidationError
from podod.mail import passwords
from podod.mail.passwords import (
    HashingPool,
    _c_crypt,
    c_backend_ok,
    check_hash,
    check_policy,
    generate_password,
    hash_password,
    verify_password,
)

PASSWORD = "Correct-Horse-7-Battery-Ä"


def test_the_c_backend_is_present_and_agrees_with_libpass() -> None:
    assert c_backend_ok(), "the system's C crypt is missing or disagrees with libpass"
    crypt = _c_crypt()
    salt = "abcdefghijklmnop"
    for rounds in (1000, 5000, 70000):
        c_out = crypt.crypt(PASSWORD, f"$6$rounds={rounds}${salt}$")
        py_out = sha512_crypt.using(rounds=rounds, salt=salt).hash(PASSWORD)
        # the same digest (libpass leaves out the default "rounds=5000$")
        assert c_out.rsplit("$", 1)[1] == py_out.rsplit("$", 1)[1]
        assert sha512_crypt.verify(PASSWORD, c_out) and crypt.crypt(PASSWORD, py_out) == py_out


def test_sha512_crypt_from_either_backend_verifies_with_the_other() -> None:
    c_hash = hash_password(PASSWORD, rounds=70000, backend="c")
    py_hash = hash_password(PASSWORD, rounds=70000, backend="libpass")
    for stored in (c_hash, py_hash):
        assert re.fullmatch(r"\{SHA512-CRYPT\}\$6\$rounds=70000\$[./A-Za-z0-9]{16}\$"
                            r"[./A-Za-z0-9]{86}", stored), stored
        digest = stored.removeprefix("{SHA512-CRYPT}")
        assert sha512_crypt.verify(PASSWORD, digest)
        assert _c_crypt().crypt(PASSWORD, digest) == digest
        assert verify_password(PASSWORD, stored)
        assert not verify_password(PASSWORD + "x", stored)
    assert c_hash != hash_password(PASSWORD, rounds=70000, backend="c")  # fresh salts


@pytest.mark.parametrize(("scheme", "pattern"), [
    ("BLF-CRYPT", r"\{BLF-CRYPT\}\$2y\$10\$.{53}"),
    ("ARGON2ID", r"\{ARGON2ID\}\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$.+"),
])
def test_other_schemes(scheme: str, pattern: str) -> None:
    stored = hash_password(PASSWORD, scheme=scheme)
    assert re.fullmatch(pattern, stored), stored
    assert verify_password(PASSWORD, stored)
    assert not verify_password("Another-Password-1", stored)


def test_verify_accepts_what_sogo_and_dovecot_write() -> None:
    sogo_style = "{sha512-crypt}" + _c_crypt().crypt(PASSWORD, "$6$O7L23ZhU$")  # no rounds=
    assert verify_password(PASSWORD, sogo_style)
    assert verify_password(PASSWORD, sogo_style.split("}", 1)[1])  # no prefix at all
    assert not verify_password(PASSWORD, "{PLAIN}" + PASSWORD)  # never plain text
    assert not verify_password(PASSWORD, "garbage")


@pytest.mark.parametrize(("password", "message"), [
    ("short-1A", "the password is too short: at least 12 characters are required"),
    (" leading-space-123", "the password must not start or end with spaces or contain "
                           "line breaks"),
    ("aaaaaaaaaaaabbbb", "the password is too weak: it repeats too few characters"),
])
def test_policy_names_the_problem(password: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_policy(password, 12)
    assert info.value.message == message


def test_generated_passwords_are_strong_and_pass_the_policy() -> None:
    seen = {generate_password(20) for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        assert len(password) == 20
        check_policy(password, 12)
        assert any(c.isupper() for c in password) and any(c.isdigit() for c in password)
    # never an option to the command-line tool it is pasted into (doveadm, passwd, ...):
    # with a symbol allowed first, 1000 passwords would almost surely hold one
    assert all(generate_password(20)[0].isalnum() for _ in range(1000))


async def test_hash_many_runs_on_every_worker_and_stop_ends_them() -> None:
    pool = HashingPool(workers=2)
    passwords = [f"Bulk-Password-{i:03d}" for i in range(8)]
    hashes = await pool.hash_many(passwords, rounds=5000)
    assert [verify_password(p, h) for p, h in zip(passwords, hashes, strict=True)] == [True] * 8
    workers = pool.worker_pids()
    assert len(workers) == 2 and os.getpid() not in workers
    children = {c.pid for c in psutil.Process().children()}
    assert set(workers) <= children
    await pool.stop()
    assert pool.worker_pids() == []
    for pid in workers:
        assert not psutil.pid_exists(pid) or \
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- bounds and the check of every hash (a 520-byte password used to be stored as
#    "{SHA512-CRYPT}*0", libxcrypt's failure token: nobody could log in any more) --------

@pytest.mark.parametrize(("password", "scheme", "message"), [
    ("Long-Pass-7" * 48, "SHA512-CRYPT",
     "the password is too long: at most 256 characters are allowed, not 528"),
    ("Äöü-Pass-7" * 25, "SHA512-CRYPT", None),  # 250 characters, 325 bytes
    ("Äöü7" + "Ä" * 251 + "b", "SHA512-CRYPT", None),  # 256 characters, 511 bytes
    ("Äöü€" + "Ä" * 252, "SHA512-CRYPT",  # 256 characters, 513 bytes
     "the password is too long for SHA512-CRYPT: at most 511 bytes in UTF-8 are allowed, "
     "not 513"),
    ("Bcrypt-Pass-7" * 5 + "1234567", "BLF-CRYPT", None),  # 72 bytes
    ("Bcrypt-Pass-7" * 6, "BLF-CRYPT",
     "the password is too long for BLF-CRYPT: at most 72 bytes in UTF-8 are allowed, not 78"),
    ("Null-\x00-Byte-Pass", "SHA512-CRYPT",
     "the password must not contain control characters such as U+0000"),
    ("Escape-\x1b[2J-Pass", "ARGON2ID",
     "the password must not contain control characters such as U+001B"),
    ("Tab-\t-Password-1", "SHA512-CRYPT",
     "the password must not contain control characters such as U+0009"),
    ("Del-\x7f-Password-1", "SHA512-CRYPT",
     "the password must not contain control characters such as U+007F"),
    ("C1-\x9b-Password-1", "SHA512-CRYPT",
     "the password must not contain control characters such as U+009B"),
    ("Surrogate-\ud800-Pass", "SHA512-CRYPT",
     "the password must not contain control characters such as U+D800"),
])
def test_passwords_a_scheme_cannot_hash_are_refused(password: str, scheme: str,
                                                    message: str | None) -> None:
    if message is None:
        check_policy(password, 12, scheme)
        assert verify_password(password, hash_password(password, scheme, rounds=1000))
        return
    for check in (lambda: check_policy(password, 12, scheme),
                  lambda: hash_password(password, scheme, rounds=1000)):  # the worker too
        with pytest.raises(UsageError) as info:
            check()
        assert info.value.message == message and info.value.exit_code == 2


@pytest.mark.parametrize("stored", [
    "{SHA512-CRYPT}*0", "{SHA512-CRYPT}*1", "{SHA512-CRYPT}", "", "*0",
    "{BLF-CRYPT}*0", "{ARGON2ID}*1", "{ARGON2ID}",
    "{SHA512-CRYPT}$6$rounds=1000$abcdefghijklmnop$" + "x" * 85,  # cut short
    "{SHA512-CRYPT}$6$rounds=1000$abcdefghijklmnop$" + "x" * 86 + "!",
    "{SHA512-CRYPT}$6$rounds=1000$$" + "x" * 86,  # no salt
    "{BLF-CRYPT}$2y$10$" + "x" * 52,
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdA",  # no digest
    "{PLAIN}" + PASSWORD,
])
def test_a_failure_token_or_a_hash_of_the_wrong_form_is_refused(stored: str) -> None:
    for scheme in ("SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"):
        with pytest.raises(PododError, match=r"^hashing the password with .* failed"):
            check_hash(stored, scheme)


def test_a_sha512_crypt_hash_of_other_rounds_is_refused() -> None:
    stored = hash_password(PASSWORD, rounds=1000)
    check_hash(stored, "SHA512-CRYPT", 1000)
    with pytest.raises(PododError, match=r"^hashing the password with SHA512-CRYPT failed"):
        check_hash(stored, "SHA512-CRYPT", 70000)
    default = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD)
    assert "rounds=" not in default  # libpass leaves the default out
    check_hash(default, "SHA512-CRYPT", 5000)


def test_real_hashes_pass_the_check() -> None:
    for scheme in ("SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"):
        check_hash(hash_password(PASSWORD, scheme, rounds=1000), scheme)
    check_hash(hash_password(PASSWORD, rounds=1000, backend="libpass"), "SHA512-CRYPT", 1000)


def test_a_hash_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker checks the hash's form, not by hashing the password a second time (the C
    crypt was checked against libpass once per process): one crypt call per password."""
    assert c_backend_ok()
    real = _c_crypt()
    calls: list[str] = []

    def counting(password: str, salt: str) -> str:
        calls.append(salt)
        return str(real.crypt(password, salt))

    monkeypatch.setattr(passwords, "_c_crypt", lambda: types.SimpleNamespace(crypt=counting))
    stored = hash_password(PASSWORD, rounds=1000, backend="c")
    assert len(calls) == 1 and verify_password(PASSWORD, stored)


@pytest.mark.parametrize("token", ["*0", "*1", "", "$6$rounds=1000$abc$short", None])
def test_a_crypt_that_fails_is_caught_before_its_hash_is_returned(
        monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    """A C crypt that answers with a failure token (or nothing) makes hash_password raise,
    in the worker, instead of returning "{SHA512-CRYPT}*0"."""
    assert c_backend_ok()
    broken = types.SimpleNamespace(crypt=lambda password, salt: token)
    monkeypatch.setattr(passwords, "_c_crypt", lambda: broken)
    with pytest.raises(PododError) as info:
        hash_password(PASSWORD, rounds=1000, backend="c")
    assert info.value.message.startswith("hashing the password with SHA512-CRYPT failed")
    assert info.value.message.endswith("; nothing was changed")


@pytest.mark.parametrize(("settings", "message"), [
    ({"scheme": "BLF-CRYPT", "generated_length": 80},
     "mail.passwords: generated_length must be at most 72 for BLF-CRYPT (longer passwords "
     "cannot be hashed)"),
    ({"min_length": 300}, "mail.passwords.min_length: must be less than or equal to 256"),
])
def test_password_settings_that_could_not_be_hashed_are_refused(
        settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"mail": {"passwords": settings}}, source="podod.yaml")
    assert str(info.value) == f"podod.yaml: {message}"


async def test_the_worker_refuses_with_the_same_sentence() -> None:
    """A password that reaches the pool without the policy check (a generated one, a
    plugin's) is refused in the worker, as a usage error the bus can answer with."""
    pool = HashingPool(workers=1)
    try:
        with pytest.raises(UsageError) as info:
            await pool.hash("Long-Pass-7" * 48, rounds=1000)
        assert info.value.message == ("the password is too long: at most 256 characters are "
                                      "allowed, not 528")
        assert verify_password(PASSWORD, await pool.hash(PASSWORD, rounds=1000))
    finally:
        await pool.stop()
