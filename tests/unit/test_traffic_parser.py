"""The mail-log parser on real Postfix and Dovecot lines (tests/data/maillog, see README)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from podod.monitor.traffic import parser as parser_module
from podod.monitor.traffic import tally as t
from podod.monitor.traffic.clock import LogClock
from podod.monitor.traffic.logparse import service_counts
from podod.monitor.traffic.parser import MailLogParser
from podod.monitor.traffic.tally import Tally
from podod.monitor.traffic.top import TopCounter

DATA = Path(__file__).resolve().parents[1] / "data" / "maillog"
EXPECTED = json.loads((DATA / "expected.json").read_text())
REFERENCE = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def parse(*texts: str, reference: float = REFERENCE, **kw: object) -> MailLogParser:
    parser = MailLogParser(Tally(top_scope="global", top_capacity=1000),
                           clock=LogClock(UTC, reference=reference), **kw)  # type: ignore[arg-type]
    for text in texts:
        parser.start_file(reference)
        parser.feed_lines(text.splitlines(keepends=True))
    parser.fold_tops()
    return parser


def real_logs() -> tuple[str, str]:
    return ((DATA / "postfix-3.7.log").read_text(), (DATA / "dovecot-2.3.log").read_text())


def labelled(totals: dict[str, int], metric: str) -> dict[str, int]:
    return {"\t".join(labels): n for labels, n in t.labelled(totals, metric)}


def test_real_postfix_and_dovecot_lines_give_exact_counts() -> None:
    parser = parse(*real_logs())
    totals = parser.tally.totals()
    for key in ("received", "delivered", "deferred", "deferrals", "bounced", "rejected",
                "expired"):
        assert totals.get(key, 0) == EXPECTED[key], key
    assert totals[t.SASL_FAILURES] == EXPECTED["sasl_failures"]
    assert labelled(totals, t.LOGIN) == EXPECTED["logins"]
    assert labelled(totals, t.AUTH_FAILURE) == EXPECTED["auth_failures"]
    by_class: dict[str, int] = {}
    for labels, n in t.labelled(totals, t.REJECT):
        by_class[labels[0]] = by_class.get(labels[0], 0) + n
    assert by_class == EXPECTED["rejects"]
    # reply codes as Postfix logged them
    assert labelled(totals, t.REJECT) == {
        "unknown-recipient\t550": 1, "relay-denied\t454": 1, "helo\t554": 1, "sender\t554": 1,
        "client\t554": 1, "policy\t450": 1, "content\t550": 1}
    # deliveries by transport: postfix-out/smtp is the smtp transport of another instance
    assert labelled(totals, t.DELIVERY) == {
        "lmtp\tsent": 5, "smtp\tsent": 2, "smtp\tdeferred": 4, "smtp\tbounced": 1,
        "smtp\texpired": 1, "lmtp\tbounced": 1, "error\tbounced": 1}
    # pflogsumm's byte totals for the same file
    assert totals[t.BYTES_RECEIVED] == 2282 and totals[t.BYTES_DELIVERED] == 6277
    assert labelled(totals, t.AUTH_REJECT) == {"password": 5, "unknown-user": 2}


def test_every_line_of_the_real_logs_is_understood() -> None:
    parser = parse(*real_logs())
    lines, unparsed = service_counts(parser)
    assert sum(lines.values()) == len("".join(real_logs()).splitlines())
    assert {k: v for k, v in unparsed.items() if v} == {}
    assert lines["postfix/smtpd"] == 45 and lines["dovecot"] == 37


def test_top_senders_and_recipients_count_like_pflogsumm() -> None:
    parser = parse(real_logs()[0])
    # received messages only (bounce notices are not "received"), once per queue id
    assert dict(parser.tally.top("sender")) == {
        "alice@example.com": 2, "bob@example.com": 2, "root@example.com": 2,
        "carol@client.example.net": 1}
    assert dict(parser.tally.top("recipient")) == {
        "bob@example.com": 3, "alice@example.com": 2, "friend@ok.test": 1,
        "later@defer.test": 1}
    assert dict(parser.tally.top("recipient_domain"))["example.com"] == 5


def test_dovecot_2_4_formats() -> None:
    parser = parse((DATA / "dovecot-2.4.log").read_text())
    totals = parser.tally.totals()
    assert labelled(totals, t.LOGIN) == {"imap": 2, "pop3": 1}
    assert labelled(totals, t.AUTH_FAILURE) == {"imap": 3, "pop3": 1, "submission": 3}
    assert labelled(totals, t.AUTH_REJECT) == {"password": 2, "unknown-user": 1}
    lines, unparsed = service_counts(parser)
    assert lines == {"dovecot": 12} and unparsed == {"dovecot": 0}


def _restamp(text: str, fmt: str) -> str:
    """The same lines with RFC 3339 or journalctl short-iso timestamps."""
    out = []
    for line in text.splitlines(keepends=True):
        stamp = datetime.strptime("2026 " + line[:15], "%Y %b %d %H:%M:%S")
        if fmt == "rfc3339":
            new = stamp.strftime("%Y-%m-%dT%H:%M:%S.123456+00:00")
        else:
            new = stamp.strftime("%Y-%m-%dT%H:%M:%S+0000")
        out.append(new + line[15:])
    return "".join(out)


def test_rfc3339_and_short_iso_timestamps_count_the_same() -> None:
    syslog = parse(*real_logs()).tally
    for fmt in ("rfc3339", "short-iso"):
        other = parse(*(_restamp(text, fmt) for text in real_logs())).tally
        assert other.totals() == syslog.totals(), fmt
        assert sorted(other.hours) == sorted(syslog.hours), fmt


def test_master_cf_service_names_and_instances() -> None:
    lines = [
        "Mar  3 10:00:00 mx postfix/relay/smtp[11]: 1A2B3C4D5E: to=<a@remote.test>, "
        "relay=mx.remote.test[192.0.2.7]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok)\n",
        "Mar  3 10:00:01 mx postfix-out/smtp[12]: 1A2B3C4D5F: to=<b@remote.test>, "
        "relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to "
        "mx.remote.test[192.0.2.7]:25: Connection timed out)\n",
        "Mar  3 10:00:02 mx postfix-in/submission/smtpd[13]: 4bQnM52Xq0z9sK7: "
        "client=unknown[198.51.100.4], sasl_method=PLAIN, sasl_username=alice@example.com\n",
        "Mar  3 10:00:03 mx postfix/qmgr[14]: 1A2B3C4D5F: to=<b@remote.test>, relay=none, "
        "delay=300, delays=300/0/0/0, dsn=4.4.1, status=deferred (delivery temporarily "
        "suspended: connect to mx.remote.test[192.0.2.7]:25: Connection timed out)\n",
    ]
    totals = parse("".join(lines)).tally.totals()
    assert labelled(totals, t.DELIVERY) == {"relay\tsent": 1, "smtp\tdeferred": 1,
                                            "qmgr\tdeferred": 1}
    assert totals["received"] == 1  # a long queue id, an instance named postfix-in
    assert totals["deferred"] == 1 and totals["deferrals"] == 2


def test_rejects_by_class_from_smtpd_postscreen_and_milters() -> None:
    rejects = [
        ("NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 554 5.7.1 Service unavailable; "
         "Client host [192.0.2.9] blocked using zen.spamhaus.org; https://x; from=<a@b.test> "
         "to=<c@example.com> proto=ESMTP helo=<x>", "rbl\t554", "postfix/smtpd"),
        ("NOQUEUE: reject: RCPT from [192.0.2.9]:40000: 550 5.7.1 Service unavailable; "
         "client [192.0.2.9] blocked using bl.spamcop.net; from=<a@b.test>, "
         "to=<c@example.com>, proto=ESMTP, helo=<x>", "rbl\t550", "postfix/postscreen"),
        ("NOQUEUE: reject: RCPT from h[192.0.2.9]: 450 4.2.0 <c@example.com>: Recipient "
         "address rejected: Greylisted, see https://x; from=<a@b.test> to=<c@example.com> "
         "proto=ESMTP helo=<x>", "policy\t450", "postfix/smtpd"),
        ("NOQUEUE: reject: RCPT from h[2001:db8::5]: 550 5.1.1 <x@example.com>: Recipient "
         "address rejected: undeliverable address: host mail[private/dovecot-lmtp] said: "
         "550 5.1.1 User doesn't exist; from=<a@b.test> to=<x@example.com> proto=ESMTP "
         "helo=<x>", "unknown-recipient\t550", "postfix/smtpd"),
        ("NOQUEUE: reject: DATA from h[192.0.2.9]: 554 5.5.1 <DATA>: Data command rejected: "
         "Multi-recipient bounce; from=<> proto=ESMTP helo=<x>", "protocol\t554",
         "postfix/smtpd"),
        ("9F8E7D6C5B: milter-reject: END-OF-MESSAGE from h[192.0.2.9]: 5.7.1 Spam; "
         "from=<a@b.test> to=<c@example.com> proto=ESMTP helo=<x>", "milter\t550",
         "postfix/cleanup"),
        ("9F8E7D6C5C: milter-reject: END-OF-MESSAGE from h[192.0.2.9]: 4.7.1 Try again; "
         "from=<a@b.test> to=<c@example.com> proto=ESMTP helo=<x>", "milter\t450",
         "postfix/smtpd"),
    ]
    text = "".join(f"Mar  3 10:00:0{i} mx {svc}[9]: {msg}\n"
                   for i, (msg, _, svc) in enumerate(rejects))
    totals = parse(text).tally.totals()
    assert totals["rejected"] == len(rejects)
    expected: dict[str, int] = {}
    for _, k, _ in rejects:
        expected[k] = expected.get(k, 0) + 1
    assert labelled(totals, t.REJECT) == expected


def test_unknown_lines_of_a_known_service_are_counted_as_unparsed() -> None:
    text = ("Mar  3 10:00:00 mx postfix/smtpd[9]: 1A2B3C4D5E: frobnicated the widget\n"
            "Mar  3 10:00:01 mx postfix/qmgr[9]: 1A2B3C4D5E: something new\n"
            "Mar  3 10:00:02 mx dovecot: imap-login: A message from the future\n"
            "Mar  3 10:00:03 mx sshd[9]: Accepted publickey for root\n"
            "not a log line at all\n")
    parser = parse(text)
    lines, unparsed = service_counts(parser)
    assert lines == {"postfix/smtpd": 1, "postfix/qmgr": 1, "dovecot": 1}
    assert unparsed == {"postfix/smtpd": 1, "postfix/qmgr": 1, "dovecot": 1}
    assert parser.malformed == 1  # the line without a timestamp


def test_syslog_year_is_inferred_across_new_year() -> None:
    text = ("Dec 31 23:59:59 mx postfix/pickup[1]: AAA1: uid=0 from=<root>\n"
            "Jan  1 00:00:01 mx postfix/pickup[1]: AAA2: uid=0 from=<root>\n")
    parser = parse(text, reference=datetime(2026, 1, 1, 0, 5, tzinfo=UTC).timestamp())
    assert sorted(parser.tally.hours) == [
        int(datetime(2025, 12, 31, 23, tzinfo=UTC).timestamp()),
        int(datetime(2026, 1, 1, 0, tzinfo=UTC).timestamp())]
    # A December log read in March is last year's December.
    parser = parse(text[:text.index("\n") + 1],
                   reference=datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    assert list(parser.tally.hours) == [int(datetime(2025, 12, 31, 23, tzinfo=UTC).timestamp())]


def test_message_state_is_bounded() -> None:
    lines = "".join(f"Mar  3 10:00:00 mx postfix/smtpd[9]: {n:011X}: client=h[192.0.2.1]\n"
                    for n in range(500))
    parser = parse(lines, max_messages=100)
    parser.bound_pending()
    assert len(parser.pending) == 100
    assert next(iter(parser.pending)) == f"{400:011X}"  # the oldest were evicted
    # Queue ids older than max_age go when later hours arrive.
    parser = parse(lines + "Mar  5 10:00:00 mx postfix/smtpd[9]: connect from h[192.0.2.1]\n",
                   max_age=86400)
    assert parser.pending == {}


def test_a_deferred_message_counts_once_across_retries_and_files() -> None:
    flow = [
        "Mar  3 10:00:00 mx postfix/smtpd[1]: ABCDEF1234: client=h[192.0.2.1]\n",
        "Mar  3 10:00:01 mx postfix/qmgr[2]: ABCDEF1234: from=<a@b.test>, size=1000, "
        "nrcpt=1 (queue active)\n",
        "Mar  3 10:00:02 mx postfix/smtp[3]: ABCDEF1234: to=<x@r.test>, relay=none, "
        "delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to r.test: timeout)\n",
        "Mar  3 11:00:01 mx postfix/qmgr[2]: ABCDEF1234: from=<a@b.test>, size=1000, "
        "nrcpt=1 (queue active)\n",
        "Mar  3 11:00:02 mx postfix/smtp[3]: ABCDEF1234: to=<x@r.test>, relay=none, "
        "delay=3601, delays=3601/0/0/0, dsn=4.4.1, status=deferred (connect to r.test: "
        "timeout)\n",
        "Mar  3 12:00:02 mx postfix/smtp[3]: ABCDEF1234: to=<x@r.test>, relay=r.test[192.0.2.8]"
        ":25, delay=7201, delays=7201/0/0/0, dsn=2.0.0, status=sent (250 OK)\n",
        "Mar  3 12:00:03 mx postfix/qmgr[2]: ABCDEF1234: removed\n",
    ]
    # split over two "files" (rotation): the message state carries over
    parser = parse("".join(flow[:3]), "".join(flow[3:]))
    totals = parser.tally.totals()
    assert (totals["received"], totals["deferred"], totals["deferrals"], totals["delivered"]) \
        == (1, 1, 2, 1)
    assert totals[t.BYTES_RECEIVED] == 1000 and totals[t.BYTES_DELIVERED] == 1000
    assert dict(parser.tally.top("sender")) == {"a@b.test": 1}  # once, not per retry
    assert parser.pending == {}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab: <", max_size=12), st.text(alphabet="ab: <", max_size=4),
       st.integers(min_value=0, max_value=14))
def test_the_parsers_prefix_test_is_startswith(line: str, prefix: str, start: int) -> None:
    """The parser's compiled prefix test (``str.find`` with both bounds, instead of a
    ``startswith`` with a start that mypyc turns into a generic call) is ``startswith``."""
    assert parser_module._at(line, prefix, start) == line.startswith(prefix, start)


def test_dovecot_file_sessions_share_one_cached_service() -> None:
    """Dovecot's own file tags its lines with the user and session (``imap(alice)<1><s>``):
    every such line is the same service, resolved once, and a session's tag is not kept
    per line (there are as many as logins)."""
    lines = [f"Nov 27 15:21:{i % 60:02d} imap(u{i}@example.com)<{i}><S{i}>: Info: "
             f"Disconnected: Logged out in=1 out=2\n" for i in range(3000)]
    lines += [f"Nov 27 15:22:{i % 60:02d} lmtp({1000 + i}): Info: Connect from local\n"
              for i in range(3000)]
    lines += ["Nov 27 15:23:00 imap-login: Info: Logged in: user=<a@example.com>, "
              "method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, mpid=5, TLS, session=<x>\n"]
    parser = parse("".join(lines))
    assert service_counts(parser) == ({"dovecot": 6001}, {"dovecot": 0})
    assert parser.tally.totals()[t.key(t.LOGIN, "imap")] == 1
    assert len([s for s in parser.services() if s.name == "dovecot"]) == 3  # imap, lmtp, login
    assert len(parser._services) <= 3 and len(parser._bases) == 3


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(alphabet="abc@.", min_size=1, max_size=4),
                       st.integers(min_value=1, max_value=5), max_size=40),
       st.integers(min_value=0, max_value=45))
def test_top_lists_rank_by_count_then_address(counts: dict[str, int], limit: int) -> None:
    """A report's top N (sorting only the candidates at or above the N-th count) is the
    first N of every address ranked by count, ties by address."""
    top = TopCounter(capacity=1000)
    top.merge(counts.items())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert top.top(limit) == ranked[:limit]
    assert top.top() == ranked
