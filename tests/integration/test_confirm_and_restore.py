"""A confirmed plan applies exactly what it showed, and a restore does not silently undo what
changed since its backup: through the real daemon and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import MailStack, make_mail_config
from podod.testbed.daemon import DaemonProcess
from podod.testbed.postgres import PgCluster

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

