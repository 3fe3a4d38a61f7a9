"""A confirmed plan applies exactly what it showed, and a restore does not silently undo what
changed since its backup: through the real daemon and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from conftest import MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.postgres import PgCluster

PASSWORD = "Correct-Horse-7-Battery"
REPO = Path(__file__).resolve().parents[2]


def test_confirm_refuses_a_plan_that_would_now_change_more(mail: MailStack) -> None:
    """The issue's scenario: a mailbox created after the plan is not deleted with it."""
    mail.ok("domain", "create", "c.example", real=True)
    mail.ok("user", "create", "late1@c.example", "--generate-password", real=True)
    plan = mail.ok("domain", "delete", "c.example", "--cascade")
    assert plan["message"] == ("domain c.example would be deleted: 4 rows (1 mailbox, "
                               "1 alias, 1 quota2)")
    mail.ok("user", "create", "late2@c.example", "--generate-password", real=True)
    before = mail.dump()
    refused = mail.fail("confirm", str(plan["plan_id"]))
    assert refused == (
        f"plan {plan['plan_id']} no longer matches: since it was made, it would make 3 more "
        "changes (delete 1 alias, 1 mailbox, 1 quota2); nothing was changed; run the "
        "command again to see the new plan")
    assert mail.dump() == before
    assert mail.sql("SELECT count(*) FROM mailbox WHERE domain='c.example'") == "2"
    # The plan is used up; the new plan shows the new rows and its confirmation applies them.
    assert mail.fail("confirm", str(plan["plan_id"])).startswith(
        f"there is no pending plan {plan['plan_id']}")
    again = mail.ok("domain", "delete", "c.example", "--cascade")
    assert again["message"] == ("domain c.example would be deleted: 7 rows (2 mailbox, "
                                "2 alias, 2 quota2)")
    done = mail.ok("confirm", str(again["plan_id"]))
    assert done["message"] == ("domain c.example deleted: 7 rows (2 mailbox, 2 alias, "
                               "2 quota2)")
    assert done["backup_id"]
    assert mail.sql("SELECT count(*) FROM domain WHERE domain='c.example'") == "0"


def test_confirm_refuses_a_plan_whose_rows_would_differ_or_are_gone(mail: MailStack) -> None:
    mail.ok("domain", "create", "d.example", real=True)
    mail.ok("user", "create", "ann@d.example", "--quota-mb", "10", "--generate-password",
            real=True)
    mail.ok("alias", "create", "info@d.example", "--to", "ann@d.example", real=True)
    # Another column changed meanwhile: the planned row and values are the same, so it applies.
    plan = mail.ok("user", "update", "ann@d.example", "--quota-mb", "20")
    mail.ok("user", "update", "ann@d.example", "--name", "Ann", real=True)
    assert mail.ok("confirm", str(plan["plan_id"]))["message"] == \
        "mailbox ann@d.example updated"
    assert mail.sql("SELECT quota FROM mailbox WHERE username='ann@d.example'") == \
        str(20 * 1024 * 1024)
    # The alias's targets changed meanwhile: the planned update would write other values.
    plan = mail.ok("alias", "update", "info@d.example", "--add", "carol@remote.example")
    mail.ok("alias", "update", "info@d.example", "--add", "dave@remote.example", real=True)
    before = mail.dump()
    assert mail.fail("confirm", str(plan["plan_id"])) == (
        f"plan {plan['plan_id']} no longer matches: since it was made, 1 change would "
        "differ (update 1 alias); nothing was changed; run the command again to see the new "
        "plan")
    assert mail.dump() == before
    # A row the plan deletes is gone meanwhile.
    plan = mail.ok("domain", "delete", "d.example", "--cascade")
    mail.ok("alias", "delete", "info@d.example", real=True)
    before = mail.dump()
    assert mail.fail("confirm", str(plan["plan_id"])) == (
        f"plan {plan['plan_id']} no longer matches: since it was made, 1 planned change "
        "would no longer happen (delete 1 alias); nothing was changed; run the command "
        "again to see the new plan")
    assert mail.dump() == before


def test_confirm_with_nothing_changed_applies_the_plan(mail: MailStack) -> None:
    mail.ok("domain", "create", "e.example", real=True)
    plan = mail.ok("user", "create", "eve@e.example", "--password-stdin", stdin=PASSWORD)
    assert plan["sandbox"] and mail.sql("SELECT count(*) FROM mailbox") == "0"
    done = mail.ok("confirm", str(plan["plan_id"]))
    assert done["message"] == "mailbox eve@e.example created (quota unlimited)"
    assert done["backup_id"] and not done["sandbox"]
    assert mail.sql("SELECT count(*) FROM mailbox WHERE username='eve@e.example'") == "1"
    # A generated password differs between the plan and its confirmation: still the same plan.
    plan = mail.ok("user", "reset-password", "eve@e.example", "--generate-password")
    done = mail.ok("confirm", str(plan["plan_id"]))
    assert done["ok"] and done["secret"]


def test_a_plan_is_confirmed_only_by_its_planner(pg: PgCluster, tmp_path: Path,
                                                 public_dir: Path, mail: MailStack) -> None:
    mail.ok("domain", "create", "f.example", real=True)
    root = tmp_path / "other"
    root.mkdir()
    config = make_mail_config(pg, root, mail.db, access={
        "unix_users": {"nobody": {"role": "admin"}}},
        socket={"path": str(public_dir / "podod.sock"), "mode": "0666"})
    daemon = DaemonProcess(config).start()
    try:
        plan = daemon.request(["domain", "delete", "f.example"])
        refused = daemon.request_as(65534, ["confirm", str(plan["plan_id"])])
        assert refused["code"] == "forbidden"
        assert refused["message"] == \
            f"plan {plan['plan_id']} belongs to unix:root, not to you"
        assert mail.sql("SELECT count(*) FROM domain WHERE domain='f.example'") == "1"
        assert daemon.request(["confirm", str(plan["plan_id"])])["ok"]
        assert mail.sql("SELECT count(*) FROM domain WHERE domain='f.example'") == "0"
    finally:
        daemon.stop()


def test_confirm_of_a_command_without_a_transaction_is_checked_first(
        start_daemon: Callable[..., DaemonProcess]) -> None:
    """The example plugin's note changes memory as it runs: there is no commit to hold back,
    so the confirmation runs the sandbox once more and refuses before anything is kept."""
    daemon = start_daemon(plugins={"dirs": [str(REPO / "plugins")], "entry_points": False})
    plan = daemon.request(["example", "note", "first"])
    assert plan["changes"][0]["key"] == "1"
    assert daemon.request(["example", "note", "meanwhile"], execute_real=True)["ok"]
    refused = daemon.request(["confirm", plan["plan_id"]])
    assert refused["code"] == "plan-changed" and refused["exit_code"] == 1
    assert refused["message"] == (
        f"plan {plan['plan_id']} no longer matches: since it was made, it would make 1 more "
        "change (insert 1 note) and 1 planned change would no longer happen (insert 1 note); "
        "nothing was changed; run the command again to see the new plan")
    plan = daemon.request(["example", "note", "second"])
    done = daemon.request(["confirm", plan["plan_id"]])
    assert done["message"] == "kept note 2"  # the refused confirmation kept nothing


def _ceo(mail: MailStack) -> str:
    """The issue's scenario: a backup of a quota change, then the password is reset."""
    mail.ok("domain", "create", "b.example", real=True)
    mail.ok("user", "create", "ceo@b.example", "--quota-mb", "10", "--password-stdin",
            stdin=PASSWORD, real=True)
    backup = str(mail.ok("user", "update", "ceo@b.example", "--quota-mb", "11",
                         real=True)["backup_id"])
    mail.ok("user", "reset-password", "ceo@b.example", "--generate-password", real=True)
    return backup


def test_restore_refuses_to_undo_later_changes_without_the_option(mail: MailStack) -> None:
    backup = _ceo(mail)
    new_hash = mail.sql("SELECT password FROM mailbox WHERE username='ceo@b.example'")
    before = mail.dump()
    expected = (f"since backup {backup} was taken, 1 row changed again (mailbox "
                "ceo@b.example: password); restoring would undo that, so nothing was changed; "
                "add --overwrite-later-changes to restore anyway")
    assert mail.fail("backup", "restore", backup) == expected  # the sandbox run says it too
    refused = mail.daemon.request(["backup", "restore", backup], execute_real=True)
    assert refused["message"] == expected and refused["code"] == "conflict"
    assert mail.dump() == before
    assert new_hash not in str(refused) and PASSWORD not in str(refused)
    plan = mail.ok("backup", "restore", backup, "--overwrite-later-changes")
    assert plan["notes"] == ["Overwrites what changed since the backup: mailbox "
                             "ceo@b.example: password."]
    done = mail.ok("backup", "restore", backup, "--overwrite-later-changes", real=True)
    assert done["backup_id"]
    row = mail.sql("SELECT quota, password FROM mailbox WHERE username='ceo@b.example'")
    quota, restored_hash = row.split("|")
    assert quota == str(10 * 1024 * 1024) and restored_hash != new_hash


def test_restore_names_rows_created_again_or_deleted_since(mail: MailStack) -> None:
    mail.ok("domain", "create", "g.example", real=True)
    mail.ok("user", "create", "old@g.example", "--generate-password", real=True)
    mail.ok("alias", "create", "team@g.example", "--to", "x@remote.example", real=True)
    deleted = str(mail.ok("user", "delete", "old@g.example", real=True)["backup_id"])
    updated = str(mail.ok("alias", "update", "team@g.example", "--add", "y@remote.example",
                          real=True)["backup_id"])
    mail.ok("user", "create", "old@g.example", "--generate-password", real=True)
    mail.ok("alias", "delete", "team@g.example", real=True)
    assert mail.fail("backup", "restore", deleted) == (
        f"since backup {deleted} was taken, 3 rows changed again (alias old@g.example: created "
        "again; quota2 old@g.example: created again; mailbox old@g.example: created again); "
        "restoring would undo that, so nothing was changed; add --overwrite-later-changes to "
        "restore anyway")
    assert mail.fail("backup", "restore", updated) == (
        f"since backup {updated} was taken, 1 row changed again (alias team@g.example: "
        "deleted); restoring would undo that, so nothing was changed; add "
        "--overwrite-later-changes to restore anyway")


def test_restore_without_later_changes_proceeds(mail: MailStack) -> None:
    mail.ok("domain", "create", "h.example", real=True)
    before = mail.dump()
    backup = str(mail.ok("user", "create", "new@h.example", "--generate-password",
                         real=True)["backup_id"])
    plan = mail.ok("backup", "restore", backup)
    assert plan["notes"] == [] and len(plan["changes"]) == 3
    assert mail.ok("backup", "restore", backup, real=True)["message"] == \
        f"restore of backup {backup}: 3 rows"
    assert mail.dump() == before


def test_a_backup_without_rows_after_its_change_needs_the_option(mail: MailStack) -> None:
    """A backup an older podod took has no 'after' rows: changes since cannot be told."""
    mail.ok("domain", "create", "i.example", real=True)
    backup = str(mail.ok("user", "create", "ann@i.example", "--generate-password",
                         real=True)["backup_id"])
    folder = Path(str(mail.ok("backup", "show", backup)["data"]["path"]))
    rows = json.loads((folder / "rows.json").read_text())
    for item in rows:
        del item["after"]
    reseal(mail, backup, folder, "rows.json", json.dumps(rows).encode())
    assert mail.ok("backup", "verify", backup)["ok"]
    assert mail.fail("backup", "restore", backup) == (
        f"backup {backup} holds no rows as they were right after its change (it was taken by "
        "an older podod), so changes made since cannot be told apart; nothing was changed; "
        "add --overwrite-later-changes to restore it anyway")
    mail.ok("backup", "restore", backup, "--overwrite-later-changes", real=True)
    assert mail.sql("SELECT count(*) FROM mailbox WHERE domain='i.example'") == "0"


def reseal(mail: MailStack, backup: str, folder: Path, name: str, data: bytes) -> None:
    """Rewrite one file of a backup the way podod writes it: manifest, SHA256SUMS, catalog."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    text = json.dumps(manifest, indent=1).encode()
    (folder / "manifest.json").write_bytes(text)
    sums = {**manifest["files"], "manifest.json": hashlib.sha256(text).hexdigest()}
    (folder / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    with sqlite3.connect(mail.root / "state" / "state.db") as state:
        state.execute("UPDATE backups SET manifest_sha256=? WHERE id=?",
                      (hashlib.sha256(text).hexdigest(), backup))
