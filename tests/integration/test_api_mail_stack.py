"""A change made through the REST API is what the real mail servers see: Dovecot
authenticates the mailbox (doveadm auth test), Postfix's maps resolve it (postmap -q); a
sandbox request changes nothing they see. Reuses the session's mail stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apitest import Api, api_sections

from conftest import ROLES, STACK_DB, MailStack, make_mail_config
from testbed.daemon import DaemonProcess
from testbed.dovecot import Dovecot
from testbed.postfix import Postfix
from testbed.waiting import poll

PASSWORD = "Api-Stack-pw-4711"


@pytest.fixture(scope="module")
def stack_api(stack: MailStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A second daemon, with the API, on the stack's database."""
    root = tmp_path_factory.mktemp("api-stack")
    sections = api_sections()
    daemon = DaemonProcess(make_mail_config(stack.pg, root, STACK_DB, roles=ROLES,
                                            **sections)).start()
    api = Api(f"http://127.0.0.1:{sections['api']['port']}")
    assert poll(lambda: api.call("GET", "/api/openapi.json").status_code == 200, 10, 0.05)
    yield api
    daemon.stop()


def test_dovecot_and_postfix_accept_what_the_api_changed(stack_api: Api, dovecot: Dovecot,
                                                         postfix: Postfix) -> None:
    api = stack_api
    domain = "api-stack.example"
    user, alias = f"carol@{domain}", f"sales@{domain}"
    api.ok("POST", "/api/domains", {"domain": domain, "execute_real": True})
    planned = api.ok("POST", "/api/users", {"address": user, "password": PASSWORD})
    assert planned["sandbox"]
    assert not dovecot.auth_test(user, PASSWORD)
    assert postfix.resolve("virtual_mailbox_maps", user) is None
    api.ok("POST", f"/api/plans/{planned['plan_id']}")
    assert dovecot.auth_test(user, PASSWORD)
    assert not dovecot.auth_test(user, "Wrong-Password-1")
    assert postfix.resolve("virtual_mailbox_maps", user) is not None
    assert postfix.resolve("virtual_mailbox_domains", domain) is not None

    api.ok("POST", "/api/aliases", {"address": alias, "to": [user], "execute_real": True})
    assert postfix.resolve("virtual_alias_maps", alias) == user

    changed = api.ok("POST", f"/api/users/{user}/password",
                     {"generate_password": True, "execute_real": True})
    new_password = changed["secrets"][0]["value"]
    assert dovecot.auth_test(user, new_password) and not dovecot.auth_test(user, PASSWORD)

    api.ok("PUT", f"/api/users/{user}", {"active": False, "execute_real": True})
    assert not dovecot.auth_test(user, new_password)
    api.ok("DELETE", f"/api/aliases/{alias}", {"execute_real": True})
    api.ok("DELETE", f"/api/users/{user}", {"execute_real": True})
    assert postfix.resolve("virtual_alias_maps", alias) is None
    assert postfix.resolve("virtual_mailbox_maps", user) is None
