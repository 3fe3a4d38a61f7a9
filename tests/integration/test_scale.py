"""Issue 12, section 2: what a change and a listing cost grows with what they touch and show,
not with the size of the mail database (a real PostgreSQL and a real daemon)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from conftest import MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster

DIGEST = "{SHA512-CRYPT}$6$rounds=5000$abcdefgh$" + "x" * 86


def seed(mail: MailStack, domain: str, count: int, name: str = "User Number ") -> None:
    """``count`` mailboxes with their alias and quota2 rows, in SQL (not through the bus)."""
    mail.sql(
        f"INSERT INTO domain (domain) VALUES ('{domain}');"
        "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain) "
        f"SELECT 'user' || lpad(i::text, 5, '0') || '@{domain}', '{DIGEST}', "
        f"'{name}' || i, '{domain}/user' || i || '/', 1073741824, "
        f"'user' || lpad(i::text, 5, '0'), '{domain}' FROM generate_series(1, {count}) AS i;"
        "INSERT INTO alias (address, goto, domain) "
        f"SELECT username, username, domain FROM mailbox WHERE domain = '{domain}';"
        "INSERT INTO quota2 (username, bytes, messages) "
        f"SELECT username, 1000, 10 FROM mailbox WHERE domain = '{domain}';")


def test_a_one_row_change_backs_up_that_row_only_and_restores_exactly(mail: MailStack
                                                                       ) -> None:
    seed(mail, "big.example", 2000)
    before = mail.dump()
    reply = mail.ok("user", "update", "user00001@big.example", "--quota-mb", "100", real=True)
    backup = str(reply["backup_id"])
    shown = mail.ok("backup", "show", backup)["data"]
    folder = Path(str(shown["path"]))  # type: ignore[index]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert files == ["SHA256SUMS", "manifest.json", "rows.json"]  # no copy of whole tables
    rows = json.loads((folder / "rows.json").read_text())
    assert [(r["table"], r["action"], r["key"]) for r in rows] == [
        ("mailbox", "update", {"username": "user00001@big.example"})]
    assert rows[0]["before"]["quota"] == 1073741824 and rows[0]["after"]["quota"] == 100 << 20
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert shown["bytes"] == size < 8000  # type: ignore[index]
    assert mail.ok("backup", "verify", backup)["message"] == "1 backup verified"
    mail.ok("backup", "restore", backup, real=True)
    assert mail.dump() == before


def test_backup_take_copies_every_table_whole_on_request(mail: MailStack) -> None:
    seed(mail, "big.example", 300)
    taken = mail.ok("backup", "take")
    entry = taken["data"]
    assert taken["message"].startswith(f"full backup {entry['id']} taken: ")  # type: ignore
    folder = Path(str(entry["path"]))  # type: ignore[index]
    mailboxes = json.loads((folder / "tables" / "mailbox.json").read_text())
    assert len(mailboxes) == 300 and mailboxes[0]["username"] == "user00001@big.example"
    assert len(json.loads((folder / "tables" / "alias.json").read_text())) == 300
    assert mail.ok("backup", "verify", str(entry["id"]))["message"] == "1 backup verified"  # type: ignore[index]
    refused = mail.daemon.request(["backup", "restore", str(entry["id"])])  # type: ignore
    assert refused["exit_code"] == 2 and refused["message"].startswith(
        f"backup {entry['id']} is a full copy of the mail database")  # type: ignore[index]


def test_full_backups_are_taken_every_full_every(pg: PgCluster, mail: MailStack,
                                                 tmp_path: Path) -> None:
    seed(mail, "big.example", 10)
    root = tmp_path / "scheduled"
    root.mkdir()
    path = make_mail_config(pg, root, mail.db, backup={"full_every": "1h"})
    with DaemonProcess(path) as daemon:
        deadline = time.monotonic() + 60
        while True:  # none was ever taken: the first is due at start
            listed = daemon.request(["backup", "list"])["data"]
            if listed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert [(e["actor"], e["command"]) for e in listed] == [
        ("podod", "backup take (backup.full_every)")]
    assert (Path(listed[0]["path"]) / "tables" / "mailbox.json").is_file()


def _next(reply: dict[str, object]) -> list[str]:
    command = str(reply["page"]["next"])  # type: ignore[index]
    words = shlex.split(command)
    assert words[0] == "podoctl"
    return words[1:]


def test_listings_page_by_default_and_name_the_next_page(mail: MailStack) -> None:
    seed(mail, "big.example", 250)
    mail.ok("domain", "create", "other.example", real=True)
    first = mail.ok("user", "list", "--domain", "big.example")
    assert len(first["data"]) == 100  # type: ignore[arg-type]
    assert first["message"] == "100 mailboxes shown, 150 more"
    assert first["notes"] == [
        "150 more mailboxes after these; the next 100: podoctl user list --domain big.example "
        "--after user00100@big.example (or --limit N, or --all for every one)"]
    second = mail.ok(*_next(first))
    assert [u["username"] for u in second["data"]][:1] == ["user00101@big.example"]  # type: ignore
    third = mail.ok(*_next(second))
    assert len(third["data"]) == 50 and third["notes"] == [] and "page" not in third  # type: ignore
    assert third["message"] == "50 mailboxes"
    everything = mail.ok("user", "list", "--all")
    assert len(everything["data"]) == 250 and "page" not in everything  # type: ignore
    some = mail.ok("user", "list", "--limit", "7", "--after", "user00010@big.example")
    assert [u["username"] for u in some["data"]] == [  # type: ignore[attr-defined]
        f"user{i:05d}@big.example" for i in range(11, 18)]
    assert some["page"]["more"] == 233  # type: ignore[index]
    searched = mail.ok("user", "list", "--search", "user001", "--limit", "5")
    assert searched["page"]["more"] == 95  # user00100..user00199, 5 shown  # type: ignore
    # The same for aliases and domains.
    for i in range(3):
        mail.ok("alias", "create", f"list{i}@big.example", "--to", "user00001@big.example",
                real=True)
    aliases = mail.ok("alias", "list", "--limit", "2")
    assert [a["address"] for a in aliases["data"]] == [  # type: ignore[attr-defined]
        "list0@big.example", "list1@big.example"]
    assert aliases["page"]["next"] == (  # type: ignore[index]
        "podoctl alias list --limit 2 --after list1@big.example")
    domains = mail.ok("domain", "list", "--limit", "1")
    assert [d["domain"] for d in domains["data"]] == ["big.example"]  # type: ignore
    assert domains["message"] == "1 domain shown, 1 more"
    assert [d["domain"] for d in mail.ok(*_next(domains))["data"]] == [  # type: ignore
        "other.example"]
    audit = mail.ok("audit", "list", "--limit", "3")
    older = mail.ok(*_next(audit))
    assert older["data"][0]["id"] == audit["data"][-1]["id"] - 1  # type: ignore[index]


def test_paging_options_refuse_bad_values_in_one_sentence(mail: MailStack) -> None:
    seed(mail, "big.example", 3)
    for argv, said in [
        (["user", "list", "--limit", "0"], "user list: --limit must be at least 1, not 0"),
        (["user", "list", "--limit", "5", "--all"],
         "user list: --limit and --all do not go together; give one"),
        (["alias", "list", "--after", ""],
         "alias list: --after needs a value from the previous page"),
        (["audit", "list", "--before", "ten"],
         "audit list: --before must be a record id (a whole number), not 'ten'"),
        (["domain", "list", "--limit", "many"],
         "domain list: --limit must be a whole number, not 'many'"),
    ]:
        result = mail.daemon.podoctl(*argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert result.stderr.strip() == f"Error: {said}", argv
        assert "Traceback" not in result.stderr


def test_podoctl_shows_the_first_page_and_streams_everything_with_all(mail: MailStack
                                                                      ) -> None:
    seed(mail, "big.example", 1500, name="Evil\x1b]0;title\x07 ")
    shown = mail.daemon.podoctl("user", "list")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("@big.example") == 100 + 1  # the rows, and the next command
    assert "1400 more mailboxes after these; the next 100: podoctl user list --after " \
        "user00100@big.example" in shown.stdout
    every = mail.daemon.podoctl("user", "list", "--all")  # a plain table past rich's share
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert len([line for line in lines if "@big.example" in line]) == 1500
    assert "\x1b" not in every.stdout and "Evil\\x1b]0;title\\x07 1500" in every.stdout
    data = mail.daemon.podoctl("user", "list", "--all", json_output=True)
    assert data.returncode == 0, data.stderr
    parsed = json.loads(data.stdout)
    assert [u["username"] for u in parsed["data"]] == [
        f"user{i:05d}@big.example" for i in range(1, 1501)]
    assert len(parsed["table"]["rows"]) == 1500 and parsed["ok"] is True
    assert "\x1b" not in data.stdout and parsed["data"][0]["name"] == "Evil\x1b]0;title\x07 1"
    assert data.stdout.count("\n") == 2 * 1500 - 1  # a row per line (data, table): grep


# podoctl as a script runs it, reporting whether rich was imported (on stderr, last line).
RICH_CHECK = """
import runpy, sys
sys.argv = ["podoctl", *sys.argv[1:]]
try:
    runpy.run_module("podod.podoctl", run_name="__main__")
except SystemExit as stop:
    code = stop.code
print("rich imported" if "rich" in sys.modules else "no rich", file=sys.stderr)
sys.exit(code)
"""


def test_a_large_json_listing_is_printed_as_sent_a_row_a_line_data_escaped(mail: MailStack
                                                                           ) -> None:
    """podoctl --json prints a long listing as the daemon sent it (without importing rich):
    the same JSON as any reply, a mailbox's row found by grep on a line of its own, and the
    C1 and bidirectional controls in names escaped as in a short reply."""
    seed(mail, "big.example", 1500, name="Evil\u202e\u0085 ")
    argv = [sys.executable, "-c", RICH_CHECK, "--socket", str(mail.daemon.socket_path),
            "--json", "user", "list", "--all"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=mail.daemon.env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "no rich"
    assert "\u202e" not in done.stdout and "\u0085" not in done.stdout
    assert "Evil\\u202e\\u0085 1500" in done.stdout
    parsed = json.loads(done.stdout)
    assert parsed["data"][0]["name"] == "Evil\u202e\u0085 1" and "type" not in parsed
    found = [line for line in done.stdout.splitlines() if "user00042@big.example" in line]
    assert len(found) == 2  # its data object and its table row, each a line
    assert json.loads(found[0].rstrip(",")) == parsed["data"][41]
    # A short listing (and any failed command) is indented as before, with the same escapes.
    short = subprocess.run([*argv[:-1], "--limit", "2"], capture_output=True, text=True,
                           timeout=60, env=mail.daemon.env)
    assert short.returncode == 0 and short.stdout.startswith('{\n  "ok": true')
    assert "\u202e" not in short.stdout and "Evil\\u202e\\u0085 1" in short.stdout
