"""SOGo's data in the mailbox life cycle (issue 17), against a real SOGo and sogo-tool run
as the sogo user through podod's runner: a renamed user logs in under the new name with
their settings and address book; ``user delete`` backs SOGo's data up and removes it, and
``backup restore`` + ``sogo restore`` bring it back; the sudoers line podod prints admits
exactly its commands (checked by sudo itself)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    ROLES,
    SOGO_PW,
    SOGO_ROLE,
    STACK_DB,
    DaemonRequests,
    MailStack,
    login,
    make_mail_config,
    new_domain,
)
from podod.mail.sogo import SogoManager, rename_sogo_user
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.ports import free_port
from testbed.runtime import runtime_for
from testbed.sogo import SOGo, SOGoSession
from testbed.sudoers import SudoersRule

PASSWORD = "Lifecycle-pw-12345"
SOGO_DB = "sogo_lifecycle"
CACHE = 6  # seconds: SOGo's SOGoCacheCleanupInterval here, and mail.sogo.cache_seconds


@dataclass
class SogoBed(DaemonRequests):
    REAL = True

    stack: MailStack
    sogo: SOGo
    daemon: DaemonProcess
    settings: dict[str, Any]

    def mailbox(self, local: str = "ann") -> str:
        address = f"{local}@{new_domain(self.stack)}"
        self.stack.ok("user", "create", address, "--password-stdin", stdin=PASSWORD,
                      real=True)
        return address

    def sogo_tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sudo", "-n", "-u", "sogo", "/usr/bin/env",
                               *[f"{k}={v}" for k, v in self.sogo.environment.items()],
                               "/usr/sbin/sogo-tool", *args], capture_output=True, text=True)

    def profiles(self) -> str:
        return self.stack.pg.psql("SELECT c_uid FROM sogo_user_profile ORDER BY 1; "
                                  "SELECT c_path2 FROM sogo_folder_info ORDER BY 1", SOGO_DB)

    def variant(self, tmp_path: Path, config: dict[str, Any]) -> Path:
        """``config`` (the bed's, changed by a test) written for a daemon of its own in
        ``tmp_path``: its own socket and state."""
        config["socket"] = {"path": str(tmp_path / "podod.sock")}
        config["state_dir"] = str(tmp_path / "state")
        path = tmp_path / "podod.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def use_sogo(self, address: str) -> None:
        """Log in (the profile comes to be), open the address books (the personal one comes
        to be) and change a setting, as the user would in SOGo."""
        self.get(address, "/Contacts/addressbooksList")
        change = self.sogo_tool("user-preferences", "set", "defaults", address,
                                "SOGoLanguage", '{"SOGoLanguage":"French"}')
        assert change.returncode == 0, change.stderr

    def get(self, address: str, path: str) -> dict[str, Any]:
        """What SOGo's web interface reads, after a login as ``address``."""
        session = SOGoSession(self.sogo.url)
        assert session.login(address, PASSWORD) == 200
        token = next(c.value for c in session.cookies if c.name == "XSRF-TOKEN")
        request = urllib.request.Request(f"{self.sogo.url}/so/{address}{path}", headers={
            "X-XSRF-TOKEN": token, "Accept": "application/json"})
        with session.opener.open(request, timeout=15) as response:
            value = json.loads(response.read())
        assert isinstance(value, dict)
        return value

    def address_books(self, address: str) -> list[tuple[str, str]]:
        books = self.get(address, "/Contacts/addressbooksList")["addressbooks"]
        return [(b["id"], b["owner"]) for b in books if not b.get("isRemote")]


@pytest.fixture(scope="module")
def bed(stack: MailStack, dovecot: Dovecot, daemons_tmp: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[SogoBed]:
    if os.geteuid() != 0:
        pytest.skip("needs root: SOGo and sogo-tool run as the sogo user")
    root = daemons_tmp / "sogo-lifecycle"
    root.mkdir()
    stack.pg.create_database(SOGO_DB, SOGO_ROLE)
    sogo = SOGo(root / "sogo", user_source=login(stack.pg, SOGO_ROLE, SOGO_PW),
                profile_db=login(stack.pg, SOGO_ROLE, SOGO_PW, db=SOGO_DB),
                imap_port=dovecot.imap_port, smtp_port=free_port(),
                extra_defaults=f"SOGoCacheCleanupInterval = {CACHE};").start()
    backups = root / "sogo-backups"
    backups.mkdir(mode=0o700)
    entry = pwd.getpwnam("sogo")
    os.chown(backups, entry.pw_uid, entry.pw_gid)
    settings = {"run_as": "sogo", "environment": sogo.environment,
                "backup_dir": str(backups), "cache_seconds": f"{CACHE}s"}
    conf_root = tmp_path_factory.mktemp("sogo-lifecycle")
    path = make_mail_config(stack.pg, conf_root, STACK_DB, roles=ROLES)
    config = yaml.safe_load(path.read_text())
    config["mail"]["sogo"] = settings
    path.write_text(yaml.safe_dump(config))
    daemon = DaemonProcess(path).start()
    yield SogoBed(stack, sogo, daemon, settings)
    daemon.stop()
    sogo.stop()


def test_a_renamed_user_logs_in_to_sogo_with_settings_and_address_book(
        bed: SogoBed, tmp_path: Path) -> None:
    old = bed.mailbox("old")
    bed.use_sogo(old)
    new = f"new@{old.split('@')[1]}"
    # The mail database's half of 'user rename' (another module's), done here by hand.
    bed.stack.sql(f"UPDATE mailbox SET username = '{new}', local_part = 'new' "
                  f"WHERE username = '{old}'; UPDATE alias SET address = '{new}', "
                  f"goto = '{new}' WHERE address = '{old}'")
    time.sleep(CACHE + 1)  # sogod's cache forgets the old name, as the user source has

    async def rename() -> str | None:
        async with runtime_for(tmp_path, mail={"sogo": bed.settings}) as runtime:
            manager = SogoManager(runtime)
            runtime.components["sogo"] = manager
            await manager.start()
            return await rename_sogo_user(runtime, old, new)

    assert asyncio.run(rename()) == \
        f"SOGo's data of {old} (settings, folders, ACLs) now belongs to {new}."
    assert bed.get(new, "/Preferences/jsonDefaults")["SOGoLanguage"] == "French"
    assert bed.address_books(new) == [("personal", new)]
    assert old not in bed.profiles()
    assert SOGoSession(bed.sogo.url).login(old, PASSWORD) != 200


def test_rename_without_mail_sogo_does_nothing(tmp_path: Path) -> None:
    async def rename() -> str | None:
        async with runtime_for(tmp_path) as runtime:
            runtime.components["sogo"] = SogoManager(runtime)
            return await rename_sogo_user(runtime, "a@example.com", "b@example.com")

    assert asyncio.run(rename()) is None


def test_delete_backs_up_and_removes_sogo_data_and_restore_brings_it_back(
        bed: SogoBed) -> None:
    address = bed.mailbox()
    bed.use_sogo(address)
    before = bed.profiles()
    assert address in before

    plan = bed.ok("user", "delete", address, real=False)
    assert f"Would back up SOGo's data of {address} (profile, folders, ACLs) on this " \
           "machine and remove it once the deletion is committed." in plan["notes"]
    assert bed.profiles() == before  # the sandbox removed nothing

    done = bed.ok("user", "delete", address)
    backup_id = str(done["backup_id"])
    folder = Path(bed.settings["backup_dir"]) / backup_id
    assert any(note.startswith(f"SOGo's data of {address} was backed up to {folder} on this "
                               "machine and removed; to undo: ") for note in done["notes"])
    assert (folder / address).exists()
    assert address not in bed.profiles()  # profile and folders gone

    assert bed.fail("sogo", "restore", address, "--backup", backup_id) == \
        f"there is no mailbox {address}; restore it first (backup restore {backup_id}), " \
        "then its SOGo data"
    restored = bed.ok("backup", "restore", backup_id)
    assert any(f"sogo restore {address} --backup {backup_id}" in note
               for note in restored["notes"])
    if time.time() < _stamp(backup_id) + CACHE - 1:
        early = bed.fail("sogo", "restore", address, "--backup", backup_id)
        assert early.startswith(f"SOGo may still keep the deleted profile of {address} in "
                                "its cache until ")
        assert address not in bed.profiles()
    time.sleep(max(0.0, _stamp(backup_id) + CACHE + 1 - time.time()))

    sandbox = bed.ok("sogo", "restore", address, "--backup", backup_id, real=False)
    assert "would come back" in sandbox["message"]
    assert address not in bed.profiles()
    back = bed.ok("sogo", "restore", address, "--backup", backup_id)
    assert any("Contacts/personal" in f for f in back["data"]["folders"])
    assert bed.get(address, "/Preferences/jsonDefaults")["SOGoLanguage"] == "French"
    assert bed.address_books(address) == [("personal", address)]


def _stamp(backup_id: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC).timestamp()


def test_sogo_restore_refuses_what_is_not_a_backup(bed: SogoBed) -> None:
    address = bed.mailbox()
    assert bed.fail("sogo", "restore", address, "--backup", "yesterday") == \
        "'yesterday' is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx, as 'backup list' shows them)"
    missing = bed.fail("sogo", "restore", address, "--backup", "20200101T000000Z-abcdef")
    assert missing.startswith(f"there is no SOGo backup of {address} in ")
    assert missing.endswith("; nothing was changed")


def test_the_sudoers_line_admits_exactly_podods_commands(bed: SogoBed) -> None:
    rule = str(bed.ok("sogo", "sudoers", real=False)["data"]["rule"])
    rule = rule.replace("root ALL=", "nobody ALL=", 1)
    env = [f"{k}={v}" for k, v in bed.sogo.environment.items()]
    tool = ["/usr/bin/env", *env, "/usr/sbin/sogo-tool"]
    backup = f"{bed.settings['backup_dir']}/20261207T101500Z-a1b2c3"

    def allowed(*argv: str) -> bool:
        check = subprocess.run(["sudo", "-l", "-U", "nobody", "-u", "sogo", *argv],
                               capture_output=True, text=True)
        return check.returncode == 0

    with SudoersRule(rule):
        assert allowed(*tool, "backup", backup, "ann@t1.example")
        assert allowed(*tool, "remove", "ann@t1.example")
        assert allowed(*tool, "rename-user", "ann@t1.example", "bob@t2.example")
        assert allowed("/usr/bin/mkdir", "-p", "-m", "0700", "--", backup)
        assert not allowed(*tool, "remove", "ALL")
        assert not allowed(*tool, "user-preferences", "set", "defaults", "ann@t1.example",
                           "SOGoLanguage", "{}")
        assert not allowed("/usr/sbin/sogo-tool", "remove", "ann@t1.example")  # env pinned
        assert not allowed(*tool, "backup", "/tmp/elsewhere", "ann@t1.example")


def test_deleting_a_user_who_never_used_sogo_works(bed: SogoBed) -> None:
    address = bed.mailbox()
    done = bed.ok("user", "delete", address)
    assert any(note.startswith(f"SOGo's data of {address} was backed up to ")
               for note in done["notes"]), done["notes"]
    assert bed.stack.sql(f"SELECT count(*) FROM mailbox WHERE username = '{address}'") == "0"


def test_delete_is_refused_while_the_sogo_server_cannot_be_reached(
        bed: SogoBed, tmp_path: Path) -> None:
    address = bed.mailbox()
    config = yaml.safe_load(bed.daemon.config_path.read_text())
    config["mail"]["sogo"] = {**bed.settings, "server": "sogo9"}
    config["servers"] = [{"name": "sogo9", "host": "127.0.0.1", "port": free_port(),
                          "user": "podod", "connect_timeout": "1s", "reconnect_min": "5s"}]
    path = bed.variant(tmp_path, config)
    before = bed.stack.dump()
    with DaemonProcess(path) as daemon:
        for real in (False, True):
            reply = daemon.request(["user", "delete", address], execute_real=real)
            assert not reply["ok"]
            assert reply["message"].startswith("removing the user's SOGo data: ")
            assert reply["message"].endswith("; nothing was changed")
    assert bed.stack.dump() == before


def test_delete_is_refused_when_sogos_data_cannot_be_backed_up(bed: SogoBed,
                                                                tmp_path: Path) -> None:
    address = bed.mailbox()
    bed.use_sogo(address)
    closed = bed.sogo.root.parent / "closed-backups"  # root's, 0700: sogo cannot write
    closed.mkdir(mode=0o700, exist_ok=True)
    config = yaml.safe_load(bed.daemon.config_path.read_text())
    config["mail"]["sogo"] = {**bed.settings, "backup_dir": str(closed)}
    path = bed.variant(tmp_path, config)
    before, profiles = bed.stack.dump(), bed.profiles()
    with DaemonProcess(path) as daemon:
        reply = daemon.request(["user", "delete", address], execute_real=True)
    assert not reply["ok"]
    assert reply["message"].endswith(f"; SOGo's data of {address} could not be backed up, so "
                                      "the mailbox was not deleted; nothing was changed")
    assert "\n" not in reply["message"]
    assert bed.stack.dump() == before
    assert bed.profiles() == profiles


def test_an_address_sogo_tool_is_not_given_is_deleted_without_its_sogo_step(
        bed: SogoBed) -> None:
    domain = new_domain(bed.stack)
    odd = f"o'neil@{domain}"  # a local part other tools allow, podod's pattern does not
    bed.stack.sql("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, "
                  f"domain, active) VALUES ('o''neil@{domain}', '', '', '{domain}/oneil/', 0, "
                  f"'o''neil', '{domain}', true)")
    done = bed.ok("user", "delete", odd)
    assert (f"podod passes only mailbox addresses of lower-case letters, digits and '._+-' "
            f"to sogo-tool, so SOGo's data of {odd} is left alone (remove it by hand with "
            "sogo-tool remove).") in done["notes"]
    assert bed.stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{domain}'") == "0"


def test_with_sogos_memcached_known_the_restore_need_not_wait(bed: SogoBed,
                                                              tmp_path: Path) -> None:
    """servers[].control.sogo_memcached of the SOGo server: user delete drops the user's
    cached profile with the credentials, so SOGo forgets it and a restore works at once."""
    address = bed.mailbox()
    bed.use_sogo(address)
    config = yaml.safe_load(bed.daemon.config_path.read_text())
    config["mail"]["sogo"] = {**bed.settings, "server": "sogo1",
                              "cache_seconds": "1h"}  # would refuse without the drop
    config["servers"] = [{"name": "sogo1", "local": True, "control": {
        "sogo_memcached": f"127.0.0.1:{bed.sogo.memcached.port}"}}]
    path = bed.variant(tmp_path, config)
    with DaemonProcess(path) as daemon:
        done = daemon.request(["user", "delete", address], execute_real=True)
        assert done["ok"], done["message"]
        assert any(note.startswith(f"after: delete SOGo's cached credentials and profile of "
                                   f"{address} (memcached of sogo1): done (")
                   and note.endswith(" of 3 entries deleted)") for note in done["notes"])
        backup_id = str(done["backup_id"])
        assert daemon.request(["backup", "restore", backup_id], execute_real=True)["ok"]
        back = daemon.request(["sogo", "restore", address, "--backup", backup_id],
                              execute_real=True)
        assert back["ok"], back["message"]
    assert bed.get(address, "/Preferences/jsonDefaults")["SOGoLanguage"] == "French"
    assert bed.address_books(address) == [("personal", address)]
    assert address in bed.profiles()


def test_user_rename_carries_the_sogo_data_with_the_mailbox(bed: SogoBed, dovecot: Dovecot,
                                                            tmp_path: Path) -> None:
    """The whole ``user rename`` with mail.sogo set: after the commit and the cache flushes,
    sogo-tool rename-user moves the profile and folders, and SOGo logs the new address in
    with the settings and address book the old one had."""
    old = bed.mailbox("olga")
    bed.use_sogo(old)
    new = f"olga.new@{old.split('@')[1]}"
    config = yaml.safe_load(bed.daemon.config_path.read_text())
    config["mail"]["sogo"] = {**bed.settings, "server": "here"}
    config["mail"]["maildir"] = {"server": "here", "root": str(dovecot.mail_dir),
                                 "trash": f"{dovecot.mail_dir}/.trash-sogo-rename",
                                 "purge_interval": 0, "check_on_create": False}
    config["servers"] = [{"name": "here", "local": True, "control": {
        "sogo_memcached": f"127.0.0.1:{bed.sogo.memcached.port}"}}]
    path = bed.variant(tmp_path, config)
    with DaemonProcess(path) as daemon:
        plan = daemon.request(["user", "rename", old, new])
        assert plan["ok"], plan["message"]
        assert (f"SOGo's data of {old} (settings, folders, ACLs) is renamed with it "
                "(sogo-tool rename-user).") in plan["notes"]
        done = daemon.request(["user", "rename", old, new], execute_real=True)
        assert done["ok"], done["message"]
        assert any(note.startswith(f"after: rename the SOGo user {old} to {new}: done")
                   for note in done["notes"]), done["notes"]
    assert bed.get(new, "/Preferences/jsonDefaults")["SOGoLanguage"] == "French"
    assert bed.address_books(new) == [("personal", new)]
    assert old not in bed.profiles()
