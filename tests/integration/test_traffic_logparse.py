"""``podod logparse`` against Debian's pflogsumm on the same files, and on bad input."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "maillog"
sys.path.insert(0, str(REPO / "bench"))
import loggen  # noqa: E402

TOTALS = ("received", "delivered", "deferred", "deferrals", "bounced", "rejected")


def podod_logparse(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podod.cli", "logparse", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def pflogsumm(path: Path) -> dict[str, int]:
    """pflogsumm's grand totals (the outbound instance counted too)."""
    assert shutil.which("pflogsumm"), "pflogsumm is not installed (make deps)"
    out = subprocess.run(["pflogsumm", "--syslog-name=postfix-out", str(path)],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    found: dict[str, int] = {}
    for key, label in (("received", "received"), ("delivered", "delivered"),
                       ("bounced", "bounced"), ("rejected", "rejected")):
        m = re.search(rf"^\s+(\d+)\s+{label}\b", out, re.M)
        assert m, f"no '{label}' in pflogsumm's report"
        found[key] = int(m.group(1))
    m = re.search(r"^\s+(\d+)\s+deferred(?:\s+\((\d+)\s+deferrals\))?", out, re.M)
    assert m
    found["deferred"] = int(m.group(1))
    found["deferrals"] = int(m.group(2) or 0)
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, loggen.GenCounts]:
    path = tmp_path_factory.mktemp("gen") / "mail.log"
    counts = loggen.write(path, lines=60_000, days=3, seed=7)
    return path, counts


def test_totals_equal_pflogsumm_on_a_generated_multi_day_log(
        generated: tuple[Path, loggen.GenCounts]) -> None:
    path, truth = generated
    result = podod_logparse(path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ours = {k: report[k] for k in TOTALS}
    assert ours == truth.totals()
    assert ours == pflogsumm(path)
    # the log crosses New Year: four calendar days, in order
    assert [p["label"][5:] for p in report["periods"]] == ["12-30", "12-31", "01-01", "01-02"]
    assert sum(p["received"] for p in report["periods"]) == truth.received
    assert report["dovecot"]["logins"] == truth.logins
    assert report["dovecot"]["auth_failures"] == truth.auth_failures
    assert report["sasl_auth_failures"] == truth.sasl_failures
    assert report["expired"] == truth.expired and report["held"] == truth.held
    assert report["forwarded"] == truth.forwarded
    by_class: dict[str, int] = {}
    for r in report["rejects"]:
        by_class[r["reason"]] = by_class.get(r["reason"], 0) + r["count"]
    assert by_class == truth.rejects
    assert all(v == 0 for v in report["unparsed"].values())


def test_rfc3339_log_and_gzip_give_the_same_totals(tmp_path: Path) -> None:
    plain = tmp_path / "mail.log"
    truth = loggen.write(plain, lines=20_000, days=2, seed=3, fmt="rfc3339")
    assert pflogsumm(plain) == truth.totals()
    packed = tmp_path / "mail.log.1.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    for path in (plain, packed):
        result = podod_logparse(path, "--json")
        assert result.returncode == 0, result.stderr
        assert {k: json.loads(result.stdout)[k] for k in TOTALS} == truth.totals()


def test_real_postfix_log_equals_pflogsumm() -> None:
    expected = json.loads((DATA / "expected.json").read_text())
    assert pflogsumm(DATA / "postfix-3.7.log") == {k: expected[k] for k in TOTALS}
    result = podod_logparse(DATA / "postfix-3.7.log", DATA / "dovecot-2.3.log", "--json")
    assert {k: json.loads(result.stdout)[k] for k in TOTALS} == {k: expected[k] for k in TOTALS}


def test_human_report(generated: tuple[Path, loggen.GenCounts]) -> None:
    path, truth = generated
    result = podod_logparse(path, "--by", "hour", "--top", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Grand totals" in out and "Per-hour traffic" in out and "Top senders" in out
    assert re.search(rf"received\s+│\s+{truth.received}\b", out)


def test_bad_input_gets_one_sentence(tmp_path: Path) -> None:
    missing = podod_logparse(tmp_path / "nope.log")
    assert missing.returncode == 2
    assert missing.stderr == f"podod logparse: {tmp_path / 'nope.log'}: no such file\n"
    folder = podod_logparse(tmp_path)
    assert folder.returncode == 2 and "is a folder" in folder.stderr
    binary = tmp_path / "ls"
    binary.write_bytes(Path("/bin/ls").read_bytes()[:200_000])
    result = podod_logparse(binary)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"podod logparse: {binary}: does not look like a mail log "
                                     "(no line starts with a syslog or RFC 3339 timestamp)")
    broken = tmp_path / "cut.gz"
    whole = gzip.compress(b"".join(b"Mar  3 10:00:%02d mx postfix/smtpd[%d]: x\n" % (i % 60, i)
                                   for i in range(5000)))
    broken.write_bytes(whole[:len(whole) // 2])
    result = podod_logparse(broken)
    assert result.returncode == 1 and "is not a complete gzip file" in result.stderr
    unreadable = tmp_path / "secret.log"
    unreadable.write_text("x\n")
    usage = podod_logparse("--top", "x", unreadable)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    for r in (missing, folder, result, usage):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # an empty file is a log with nothing in it, not an error
    empty = tmp_path / "empty.log"
    empty.write_text("")
    result = podod_logparse(empty, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["received"] == 0


@pytest.mark.parametrize("fmt", [["--json"], []])
def test_a_reader_that_goes_away_is_no_error(generated: tuple[Path, loggen.GenCounts],
                                             fmt: list[str]) -> None:
    """'podod logparse ... | head': the rest of the report is not wanted; no traceback and
    exit 0, as podoctl does."""
    path, _ = generated
    proc = subprocess.Popen([sys.executable, "-m", "podod.cli", "logparse", str(path),
                             "--by", "hour", "--top", "1000", *fmt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)  # the report is far longer than a pipe's buffer
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(120) == 0, stderr
    assert stderr == ""


def test_logparse_starts_without_what_it_does_not_use() -> None:
    """``podod logparse FILE --json`` is a command a user times against pflogsumm: its
    start-up imports neither the daemon's configuration (pydantic) nor rich, nor what Python
    does not load by itself and the command does not need (each costs milliseconds)."""
    code = ("import sys; from podod.cli import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {"
            "'pydantic', 'rich', 'pathlib', 'typing', 'dataclasses', 'gzip', 'zoneinfo', "
            "'asyncio', 'yaml'} or m in ('importlib.abc', 'importlib.resources')), "
            "file=sys.stderr); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, "logparse",
                             str(DATA / "postfix-3.7.log"), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["received"] > 0
    assert result.stderr.strip() == "[]", result.stderr
