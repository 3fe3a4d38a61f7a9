"""Reading and writing the import's CSV files: the header, the delimiter, the byte-order
mark, line numbers, every kind of bad value as one reason, and exports read back as
written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from podod.errors import ValidationError
from podod.mail import csvio
from podod.mail.csvio import MB, Options
from podod.mail.passwords import check_policy, hash_password

HASH = hash_password("Pre-Hashed-Pass-77", "SHA512-CRYPT", 1000)
OPTIONS = Options(policy=check_policy)


def reasons(kind: csvio.Kind, text: str, options: Options = OPTIONS) -> dict[int, str]:
    return {b.line: b.reason for b in csvio.read(kind, text, options).bad}


def test_header_bom_and_semicolons() -> None:
    text = "\ufeffE-Mail;Full Name;Quota;Password_Hash\nA@Example.COM;Ann;2G;" + HASH + "\n"
    parsed = csvio.read("user", text, OPTIONS)
    assert parsed.bad == [] and parsed.columns == ["address", "name", "quota",
                                                  "password_hash"]
    record = parsed.records[0]
    assert record.key == "a@example.com" and record.domain == "example.com"
    assert record.values["quota"] == 2048 * MB and record.values["name"] == "Ann"
    # bytes with or without a BOM are the same file
    assert csvio.read("user", text.encode("utf-8"), OPTIONS).records[0].key == record.key
    assert csvio.delimiter('"a;b",c,d') == ","
    assert csvio.delimiter("address;name") == ";"


@pytest.mark.parametrize(("text", "said"), [
    ("", "the file is empty"),
    ("\n\n", "the file is empty"),
    ("a@example.com,Ann\n", "must be a header"),
    ("address,colour\n", "unknown column 'colour'"),
    ("name,quota\n", "no address column"),
    ("address,name,Name\n", "column name twice"),
    ("address\n", "no rows"),
])
def test_a_bad_file_is_one_sentence(text: str, said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        csvio.read("user", text, OPTIONS)
    assert said in caught.value.message


def test_not_utf8_is_refused() -> None:
    with pytest.raises(ValidationError, match="not UTF-8"):
        csvio.decode("address\nj\xf6rg@example.com\n".encode("latin-1"))


def test_line_numbers_count_physical_lines() -> None:
    text = ("address,name,password_hash\n"
            f'a@example.com,"two\nlines",{HASH}\n'   # lines 2-3: a line break in a name
            "\n"                                     # 4: empty, skipped
            f"bad address,B,{HASH}\n"                # 5
            f"c@example.com,C,{HASH},extra\n")       # 6
    got = reasons("user", text)
    assert set(got) == {2, 5, 6}
    assert "control characters" in got[2]
    assert "not an e-mail address" in got[5]
    assert "3 fields, the header 4" not in got[6] and "4 fields, the header 3" in got[6]


@pytest.mark.parametrize(("value", "expected"), [
    ("", None), ("0", 0), ("unlimited", 0), ("100", 100 * MB), ("500M", 500 * MB),
    ("2G", 2048 * MB), ("2 GiB", 2048 * MB), ("1048576B", MB), ("1536k", 1536 * 1024),
    ("1T", 1024 * 1024 * MB)])
def test_quota_formats(value: str, expected: int | None) -> None:
    assert csvio.quota("quota", value) == expected


@pytest.mark.parametrize("value", ["-5", "lots", "1.5G", "2X", "99999999999999999999"])
def test_bad_quotas(value: str) -> None:
    with pytest.raises(csvio.RowError):
        csvio.quota("quota", value)


@pytest.mark.parametrize(("value", "said"), [
    ("$6$abc", "{SCHEME} prefix"),
    ("{PLAIN}secret", "clear text"),
    ("{CLEARTEXT}secret", "clear text"),
    ("{ROT13}abc", "Dovecot does not accept"),
    ("{SHA512-CRYPT}$6$short$xyz", "form is wrong"),
    ("{BLF-CRYPT}$2y$10$tooshort", "form is wrong"),
    ("{SSHA256}has space", "form is wrong"),
    ("{SHA512-CRYPT.X}abc", "unknown encoding"),
])
def test_pre_hashed_passwords_must_be_a_scheme_dovecot_accepts(value: str, said: str) -> None:
    with pytest.raises(csvio.RowError, match=said.replace("{", r"\{").replace("}", r"\}")):
        csvio.password_hash(value)


def test_good_pre_hashed_passwords() -> None:
    blf = "{BLF-CRYPT}$2y$05$" + "a" * 53
    for value in (HASH, blf, "{ssha256}c29tZWhhc2hzYWx0", "{SHA512-CRYPT.b64}YWJj",
                  "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"):
        assert csvio.password_hash(value) == value


def test_every_kind_of_bad_user_row() -> None:
    rows = [
        f"ok@example.com,Ok,100,,{HASH},yes,",              # 2 fine
        f"Ok@Example.com,Dup,100,,{HASH},yes,",             # 3 the same address again
        "p@example.com,P,100,short,,yes,",                  # 4 password too short
        f"b@example.com,B,100,Long-Pass-1234,{HASH},yes,",  # 5 both
        "n@example.com,N,100,,,yes,",                       # 6 no password
        f"q@example.com,Q,huge,,{HASH},yes,",               # 7 quota
        f"a@example.com,A,100,,{HASH},perhaps,",            # 8 active
        f"t@example.com,T,100,,{HASH},yes,yesterday",       # 9 time
        f"x/y@example.com,X,100,,{HASH},yes,",              # 10 maildir-unsafe local part
    ]
    text = "address,name,quota,password,password_hash,active,created\n" + "\n".join(rows)
    got = reasons("user", text)
    assert set(got) == set(range(3, 11)), got
    assert "twice (also on line 2)" in got[3]
    assert "too short" in got[4]
    assert "both password and password_hash" in got[5]
    assert "no password" in got[6]
    assert "not a size" in got[7]
    assert "yes or no" in got[8]
    assert "not a time" in got[9]
    assert "'/'" in got[10]
    # --generate-passwords: a row without a password is fine
    generated = reasons("user", text, Options(generate=True, policy=check_policy))
    assert 6 not in generated


def test_domain_option_and_bare_local_parts() -> None:
    text = f"address,password_hash\nann,{HASH}\nbob@other.example,{HASH}\n"
    parsed = csvio.read("user", text, Options(domain="example.com"))
    assert [r.key for r in parsed.records] == ["ann@example.com"]
    assert "not in the domain example.com" in parsed.bad[0].reason


def test_alias_and_domain_rows() -> None:
    text = ('address,targets\n'
            'sales@example.com,"a@example.com, b@remote.org  c@remote.org"\n'
            '@example.com,postmaster@example.com\n'
            'self@example.com,self@example.com\n'
            'none@example.com,\n')
    parsed = csvio.read("alias", text, OPTIONS)
    assert parsed.records[0].values["targets"] == ["a@example.com", "b@remote.org",
                                                   "c@remote.org"]
    assert parsed.records[1].key == "@example.com"
    got = {b.line: b.reason for b in parsed.bad}
    assert "forward to itself" in got[4] and "targets is empty" in got[5]
    limited = reasons("alias", "address,targets\na@x.org,\"b@x.org,c@x.org\"\n",
                      Options(max_targets=1))
    assert "at most 1 targets" in limited[2]
    domains = ("domain,maxquota,quota,mailboxes,backupmx\n"
               "ok.example,100,1000,5,no\n"
               "big.example,2000,1000,0,no\n"
               "neg.example,-1,1000,0,no\n"
               "few.example,0,0,-2,no\n"
               "Bad Domain,0,0,0,no\n")
    got = reasons("domain", domains)
    assert set(got) == {3, 4, 5, 6}
    assert "cannot be larger" in got[3] and "cannot go together" in got[4]
    assert "between -1 and" in got[5]


def test_an_export_reads_back_as_written() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = csvio.write(["address", "name", "quota", "password_hash", "active", "created"],
                       [["a@example.com", 'Zoë "Q", Jr.', csvio.quota_text(1536 * 1024),
                         HASH, False, created]])
    record = csvio.read("user", text, OPTIONS).records[0]
    assert record.values["name"] == 'Zoë "Q", Jr.'
    assert record.values["quota"] == 1536 * 1024 and record.values["active"] is False
    assert record.values["password_hash"] == HASH and record.values["created"] == created
    assert csvio.quota_text(5 * MB) == "5"


def test_a_huge_field_is_one_sentence() -> None:
    text = "address,name\n" + "a@example.com," + "x" * (csvio.MAX_FIELD + 10) + "\n"
    with pytest.raises(ValidationError, match="line 2 cannot be read as CSV"):
        csvio.read("user", text, OPTIONS)
