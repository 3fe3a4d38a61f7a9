"""Relay domains and transports against the real database and the real Postfix: ``domain
create|update --transport ... --backup-mx`` as PostfixAdmin keeps them, read back through the
shipped relay_domains and transport_maps pgsql maps with ``postmap -q``; a backup MX is no
virtual mailbox domain and holds no mailboxes; a transport Postfix would refuse is refused
with one sentence and changes nothing."""

from __future__ import annotations

import itertools
import json

import pytest

from conftest import OWNER, OWNER_PW, MailStack, PostfixAdminDb
from podod.mail.serverconfig import SqlLogin, postfix_map
from testbed.daemon import DaemonProcess
from testbed.postfix import Postfix

_names = itertools.count()


def new_domain(stack: MailStack, *options: str) -> str:
    """A domain of this test's own, created for real with ``options``."""
    name = f"relay{next(_names)}.example"
    stack.ok("domain", "create", name, *options, real=True)
    return name


def test_a_backup_mx_is_a_relay_domain_and_not_a_mailbox_domain(
        stack: MailStack, postfix: Postfix) -> None:
    name = new_domain(stack, "--backup-mx")
    assert postfix.resolve("relay_domains", name) == name
    assert postfix.resolve("virtual_mailbox_domains", name) is None
    assert postfix.resolve("transport_maps", name) is None  # relay_transport, to its MX
    shown = stack.ok("domain", "show", name)["data"]
    assert shown["backupmx"] is True and shown["transport"] is None  # type: ignore[index]
    listed = {d["domain"]: d for d in stack.ok("domain", "list", "--all")["data"]}  # type: ignore
    assert listed[name]["backupmx"] is True

    # It holds no mailboxes or aliases: mail for it is relayed, not delivered here.
    message = stack.fail("user", "create", f"bob@{name}", "--password-stdin",
                         stdin="Relay-Test-2024-x")
    assert message == (f"the domain {name} is a backup MX (its mail is relayed, not "
                       f"delivered here), so it has no mailboxes; 'domain update {name} "
                       "--backup-mx no' makes it a mailbox domain")
    assert "so it has no aliases" in stack.fail("alias", "create", f"info@{name}", "--to",
                                                "someone@example.org")
    assert stack.sql(f"SELECT count(*) FROM mailbox WHERE domain = '{name}'") == "0"

    # Back to a mailbox domain: Postfix's maps follow.
    stack.ok("domain", "update", name, "--backup-mx", "no", real=True)
    assert postfix.resolve("relay_domains", name) is None
    assert postfix.resolve("virtual_mailbox_domains", name) == name


def test_a_domain_with_mailboxes_does_not_become_a_backup_mx(stack: MailStack,
                                                             postfix: Postfix) -> None:
    name = new_domain(stack)
    stack.ok("user", "create", f"alice@{name}", "--password-stdin", stdin="Relay-Test-2024-x",
             real=True)
    message = stack.fail("domain", "update", name, "--backup-mx", "yes")
    assert message.startswith(f"the domain {name} has mailboxes or aliases, which a backup "
                              "MX domain cannot have")
    assert stack.sql(f"SELECT backupmx FROM domain WHERE domain = '{name}'") == "f"
    assert postfix.resolve("relay_domains", name) is None


def test_a_transport_reaches_postfix_and_is_shown_audited_and_sandboxed(
        stack: MailStack, postfix: Postfix) -> None:
    name = new_domain(stack, "--transport", "relay:[10.0.0.5]:2525")
    assert postfix.resolve("transport_maps", name) == "relay:[10.0.0.5]:2525"
    # Still a mailbox domain: Postfix checks the recipients, then relays to the hub.
    assert postfix.resolve("virtual_mailbox_domains", name) == name
    show = stack.ok("domain", "show", name)
    assert ["transport", "relay:[10.0.0.5]:2525"] in show["table"]["rows"]  # type: ignore

    # Without --execute-real: a plan, nothing changed.
    plan = stack.ok("domain", "update", name, "--transport", "lmtp:inet:10.0.0.6:24")
    assert "would be updated" in str(plan["message"])
    assert postfix.resolve("transport_maps", name) == "relay:[10.0.0.5]:2525"

    stack.ok("domain", "update", name, "--transport", "lmtp:inet:10.0.0.6:24", real=True)
    assert postfix.resolve("transport_maps", name) == "lmtp:inet:10.0.0.6:24"
    records = stack.ok("audit", "list", "--limit", "5")["data"]
    assert "lmtp:inet:10.0.0.6:24" in json.dumps(records)

    # PostfixAdmin's "virtual" (its default) and "default" leave no transport_maps entry:
    # the domain keeps virtual_transport (Dovecot's LMTP), not Postfix's virtual(8).
    stack.ok("domain", "update", name, "--transport", "virtual", real=True)
    assert stack.sql(f"SELECT transport FROM domain WHERE domain = '{name}'") == "virtual"
    assert postfix.resolve("transport_maps", name) is None
    stack.ok("domain", "update", name, "--transport", "smtp:[mx.example.net]", real=True)
    assert postfix.resolve("transport_maps", name) == "smtp:[mx.example.net]"
    stack.ok("domain", "update", name, "--transport", "default", real=True)
    assert stack.sql(f"SELECT transport IS NULL FROM domain WHERE domain = '{name}'") == "t"
    assert postfix.resolve("transport_maps", name) is None


@pytest.mark.parametrize(("transport", "why"), [
    ("smtp:[mx.example.net]:99999", "the port 99999 is not from 1 to 65535"),
    ("relay:[mx.example.net", "a '[' without its ']'"),
    ("smtp:mx.example.net 25", "it holds a space"),
    ("smtp:[mx..example]", "'mx..example' is not a host name or an IP address"),
    ("smtp:inet:10.0.0.6:24", "an inet: or unix: next hop is only for the lmtp transport"),
    ("re lay:[mx.example.net]", "'re lay' is not a master.cf service name"),
])
def test_a_transport_postfix_would_refuse_is_one_sentence_and_changes_nothing(
        stack: MailStack, postfix: Postfix, transport: str, why: str) -> None:
    name = new_domain(stack, "--transport", "relay:[10.0.0.5]")
    before = stack.dump()
    message = stack.fail("domain", "update", name, "--transport", transport)
    assert message.startswith(f"--transport '{transport}' is not a Postfix transport: {why} (")
    assert "\n" not in message
    assert stack.dump() == before
    assert postfix.resolve("transport_maps", name) == "relay:[10.0.0.5]"
    created = stack.fail("domain", "create", f"new-{name}", "--transport", transport)
    assert created == message
    assert stack.sql(f"SELECT count(*) FROM domain WHERE domain = 'new-{name}'") == "0"


def test_imports_keep_the_same_rules(stack: MailStack, postfix: Postfix) -> None:
    name = new_domain(stack, "--backup-mx")
    before = stack.dump()
    def refused(noun: str, text: str) -> str:
        reply = stack.daemon.request([noun, "import"], execute_real=True, stdin=text)
        assert not reply["ok"] and "nothing was imported" in reply["message"], reply
        return json.dumps(reply)

    bad = refused("domain", f"domain,transport\nimp-{name},smtp:[mx.example.net]:99999\n")
    assert ("transport 'smtp:[mx.example.net]:99999' is not a Postfix transport: the port "
            "99999 is not from 1 to 65535") in bad
    users = refused("user", f"address,name,quota,password\nx@{name},X,100,Import-Test-24-x\n")
    assert f"the domain {name} is a backup MX" in users
    assert stack.dump() == before
    stack.ok("domain", "import", stdin=(f"domain,transport,backupmx\nimp-{name},"
                                        "relay:[10.0.0.7]:25,no\n"), real=True)
    assert postfix.resolve("transport_maps", f"imp-{name}") == "relay:[10.0.0.7]:25"


def test_postfixadmins_domains_keep_their_transport_and_postfixadmin_reads_podods(
        postfixadmin_db: PostfixAdminDb, postfix: Postfix) -> None:
    """A database PostfixAdmin made: its domain's transport ('virtual', its default) is no
    transport_maps entry (Dovecot keeps the mail); the transport and backup MX podod sets
    are the columns PostfixAdmin shows."""
    pfa = postfixadmin_db
    maps = pfa.root / "maps"
    maps.mkdir()
    owner = SqlLogin(host="127.0.0.1", port=pfa.pg.port, dbname=pfa.db, user=OWNER,
                     password=OWNER_PW)

    def lookup(name: str, key: str) -> str | None:
        path = maps / name
        path.write_text(postfix_map(name, owner))
        result = postfix.command("postmap", "-c", str(postfix.config_dir), "-q", key,
                                 f"pgsql:{path}")
        assert result.returncode in (0, 1) and not result.stderr.strip(), result.stderr
        return result.stdout.strip() or None

    assert pfa.sql("SELECT transport, backupmx FROM domain WHERE domain = 'example.com'") == \
        "virtual|f"
    assert lookup("transport_maps.cf", "example.com") is None
    assert lookup("virtual_mailbox_domains.cf", "example.com") == "example.com"
    with DaemonProcess(pfa.config_path) as daemon:
        def ok(*argv: str) -> None:
            reply = daemon.request(list(argv), execute_real=True)
            assert reply["ok"], reply["message"]

        ok("domain", "update", "example.com", "--transport", "relay:[10.0.0.8]:25")
        ok("domain", "create", "mx2.example.com", "--backup-mx")
    assert lookup("transport_maps.cf", "example.com") == "relay:[10.0.0.8]:25"
    assert lookup("relay_domains.cf", "mx2.example.com") == "mx2.example.com"
    assert lookup("virtual_mailbox_domains.cf", "mx2.example.com") is None
    # PostfixAdmin's own view (it shows no transport unless its config asks for it).
    def backup_mx(domain: str) -> str:
        shown = pfa.admin.view("domain", domain)
        return next(v for k, v in shown.items() if "backup" in k.lower())

    assert (backup_mx("mx2.example.com"), backup_mx("example.com")) == ("YES", "NO")
