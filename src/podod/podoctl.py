"""``podoctl``: talk to the running daemon over its Unix socket.

Exit codes: 0 ok, 1 the command failed, 2 usage or configuration error, 3 the daemon cannot
be reached. A real change (``--execute-real``) shows the sandbox plan and asks for
confirmation on a terminal unless ``--yes``; without a terminal it needs ``--yes``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from podod.libwarnings import hide_library_warnings

if TYPE_CHECKING:  # imported where used: 'podoctl --json' starts without rich
    import re

    from rich.console import Console

    from podod.bus.context import Reply

DEFAULT_SOCKET = "/run/podod/podod.sock"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

USAGE = """\
usage: podoctl [--socket PATH] [--json] [--execute-real] [--yes] COMMAND [ARGS...]

Talk to the running podod daemon. Commands follow one grammar, 'noun verb positional
--options', the same as '!podo ...' in the Matrix admin room.

options:
  --socket PATH     the daemon's socket (default: $PODOD_SOCKET or /run/podod/podod.sock)
  --json            print the daemon's reply as JSON, for scripts
  --execute-real    really change data; without it every change is a sandbox dry run
  --yes, -y         do not ask for confirmation of a real change
  -h, --help        this text; 'podoctl help' lists the daemon's commands

files (on podoctl's side; the daemon never opens them):
  NOUN import FILE.csv      send the file as the command's data (without FILE: stdin)
  --report FILE             an import's bad rows, as CSV
  --passwords-out FILE      user import --generate-passwords: the passwords (mode 0600)
  --csv FILE                an export, written to FILE (mode 0600) instead of printed

exit codes: 0 ok, 1 command failed, 2 usage error or refused value (or configuration
error), 3 daemon unreachable
"""


_READ_BUFFER = 1 << 18
# A successful reply's line as the daemon writes it (podod.frontends.unix_socket: the type,
# then Reply.to_dict(), whose first field is ok). Only such a line is passed through raw;
# any other (an error, an older daemon's order) is decoded as always.
_OK_REPLY = b'{"type": "reply", "ok": true, '
# podoctl --json prints a successful reply of at least this many bytes as the daemon sent it,
# compact, one list element per line (decoding and encoding 8 MB again took 170 ms); a
# smaller one is indented. The content is the same either way.
RAW_BYTES = 262_144
# Between two elements of a list of objects (or of lists beginning with a string) the
# daemon's compact JSON has '}, {"' ('], ["'): the ', ' becomes ',\n'. The quote opens a
# string (a key) unless what follows it could follow a closing quote; only then could the
# bytes be inside a string ("a}, {"), and then the reply is left on one line.
_ELEMENTS = ((b'}, {"', b'},\n{"'), (b'], ["', b'],\n["'))
_INSIDE = (rb'\}, \{"[,:}\] \t\r\n]', rb'\], \["[,:}\] \t\r\n]')
# The characters JSON_ESCAPES escapes (podod.bus.render), as UTF-8: DEL and C1 controls,
# line/paragraph separators and bidirectional controls. Only their lead bytes are looked for
# first (memchr speed); a line without them needs no change.
_ESCAPED_UTF8 = rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
_LEADS = (b"\x7f", b"\xc2", b"\xe2")


def _escape_utf8(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def print_raw(line: bytes, out: Any) -> None:
    """A successful reply's line (:data:`_OK_REPLY`) on the binary stream ``out`` as
    podoctl --json shows replies: without the protocol's ``type``, the characters
    ``JSON_ESCAPES`` names escaped (they occur only inside strings, so the JSON stays equal),
    a listing's rows one per line (:data:`_ELEMENTS`: 'grep' finds a mailbox's line)."""
    import re

    body = b"{" + line[len(b'{"type": "reply", '):].rstrip(b"\n")
    if any(lead in body for lead in _LEADS):
        body = re.sub(_ESCAPED_UTF8, _escape_utf8, body)
    if not any(re.search(inside, body) for inside in _INSIDE):
        for between, broken in _ELEMENTS:
            body = body.replace(between, broken)
    out.write(body)
    out.write(b"\n")


class Unreachable(Exception):
    pass


class InputRefused(Exception):
    """The input the daemon asked for was not given (two passwords differ)."""


class Connection:
    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise Unreachable(f"podod is not running: there is no socket at {path}. Start it "
                              "with 'systemctl start podod' (or 'make demo'), or point "
                              "--socket / $PODOD_SOCKET at the right path.") from None
        except PermissionError:
            raise Unreachable(f"you may not open {path}: ask for membership of the socket's "
                              "group, or run podoctl as root") from None
        except OSError as exc:
            raise Unreachable(f"podod is not answering on {path} ({exc.strerror}). Start it "
                              "with 'systemctl start podod' (or 'make demo').") from None
        # A large reply (8 MB for 30 000 mailboxes) is read in large pieces, not 8 kB ones.
        self.file = self.sock.makefile("rb", buffering=_READ_BUFFER)

    def request(self, payload: dict[str, Any], on_progress: Callable[[dict[str, Any]], None],
                on_stdin: Callable[[str], str] | None = None, *, raw_from: int | None = None
                ) -> dict[str, Any] | bytes:
        """Send one request; answer the daemon's call for the input the command declares
        (``on_stdin(kind)``), pass progress on, and return the reply. With ``raw_from``, a
        successful reply of at least that many bytes is returned as the daemon sent it (its
        line, undecoded: :func:`print_raw`)."""
        if on_stdin is not None:
            payload = {**payload, "stdin_offer": True}
        try:
            self.sock.sendall(json.dumps(payload).encode() + b"\n")
        except BrokenPipeError:
            pass  # the daemon refused the request (too large) and closed: read why
        while True:
            line = self.file.readline()
            if not line:
                raise Unreachable("podod closed the connection before answering "
                                  "(it may be stopping; see its log)")
            if raw_from is not None and len(line) >= raw_from and line.startswith(_OK_REPLY) \
                    and line.endswith(b"}\n"):
                return line
            message = json.loads(line)
            if message.get("type") == "progress":
                on_progress(message)
                continue
            if message.get("type") == "stdin" and on_stdin is not None:
                text = on_stdin(str(message.get("kind")))
                try:
                    self.sock.sendall(json.dumps({"stdin": text}).encode() + b"\n")
                except BrokenPipeError:
                    pass  # too large: the daemon says so and closes
                continue
            return message

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def parse_globals(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"socket": os.environ.get("PODOD_SOCKET", DEFAULT_SOCKET),
                            "json": False, "execute_real": False, "yes": False, "help": False}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            rest += argv[i:]
            break
        if token == "--socket" or token.startswith("--socket="):
            if "=" in token:
                opts["socket"] = token.split("=", 1)[1]
            elif i < len(argv):
                opts["socket"] = argv[i]
                i += 1
            else:
                raise ValueError("--socket needs a path")
        elif token == "--json":
            opts["json"] = True
        elif token == "--execute-real":
            opts["execute_real"] = True
        elif token in ("--yes", "-y"):
            opts["yes"] = True
        elif token in ("-h", "--help") and not rest:
            opts["help"] = True
        elif token.startswith("-") and not rest:
            raise ValueError(f"unknown option {token} (podoctl's own options are --socket, "
                             "--json, --execute-real and --yes; command options follow the "
                             "command; see 'podoctl --help')")
        else:
            rest.append(token)
    return opts, rest


def main(argv: list[str] | None = None) -> int:
    hide_library_warnings()
    # podoctl is one request long and makes no reference cycles worth collecting; the cyclic
    # collector would walk a large reply's million objects again and again while it is read
    # (half of json.loads' time for 100 000 mailboxes).
    gc.disable()
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    finally:
        gc.enable()


def _run(argv: list[str]) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # 'podoctl user list | head': the reader went away, fine
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("\nInterrupted; nothing was changed by podoctl.", file=sys.stderr)
        return 130


def _read_stdin(kind: str) -> str:
    """The input a command declares (the daemon asks for it): a secret is asked twice on a
    terminal, one line from a pipe; data (a CSV file) is read whole, as it is."""
    if kind == "data":
        return sys.stdin.read()
    if not sys.stdin.isatty():
        return sys.stdin.read().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != first:
        raise InputRefused("the two passwords differ; nothing was sent")
    return first


# Files on podoctl's side of a command (the daemon never opens a client's path): an
# import's FILE is sent as the command's data input; what these options name is written
# here from the reply. The same commands take an attachment in chat and a body in the API.
CLIENT_OPTIONS = ("--report", "--passwords-out", "--csv")
_FLAGS = {"--generate-passwords", "--execute-real", "--all"}


class ClientFiles:
    """The client-side words of a request, taken out of its argv."""

    def __init__(self) -> None:
        self.input: str | None = None  # FILE of an import
        self.data: str | None = None
        self.outputs: dict[str, str] = {}

    @classmethod
    def take(cls, rest: list[str]) -> tuple[ClientFiles, list[str]]:
        files, kept = cls(), list[str]()
        importing = len(rest) >= 2 and rest[1] == "import"
        i = 0
        while i < len(rest):
            token = rest[i]
            name, eq, value = token.partition("=")
            if name in CLIENT_OPTIONS:
                if not eq:
                    if i + 1 >= len(rest):
                        raise ValueError(f"{name} needs a file name")
                    value = rest[i + 1]
                    i += 1
                files.outputs[name] = value
            elif (importing and i >= 2 and files.input is None and not token.startswith("-")
                  and not (kept[-1].startswith("--") and "=" not in kept[-1]
                           and kept[-1] not in _FLAGS and len(kept) > 2)):
                files.input = token
            else:
                kept.append(token)
            i += 1
        if "--csv" in files.outputs and not (len(rest) >= 2 and rest[1] == "export"):
            raise ValueError("--csv FILE goes with an export command (e.g. 'user export')")
        if ("--report" in files.outputs or "--passwords-out" in files.outputs) and \
                not importing:
            raise ValueError("--report and --passwords-out go with an import command "
                             "(e.g. 'user import FILE.csv')")
        return files, kept

    def read_input(self) -> None:
        """The import's file, read whole now (a missing file is said before anything is
        sent): UTF-8, a byte-order mark dropped."""
        if self.input is None:
            return
        try:
            with open(self.input, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise ValueError(f"cannot read {self.input}: {exc.strerror}") from None
        try:
            self.data = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{self.input} is not UTF-8 (byte {exc.start + 1} cannot be "
                             "read); save it as UTF-8") from None

    def stdin(self, kind: str) -> str:
        if kind == "data" and self.data is not None:
            return self.data
        return _read_stdin(kind)

    def write(self, reply: Reply) -> None:
        """Write what the options name from ``reply``; secrets go only to their file and
        are taken out of the reply, so they are never printed."""
        import csv
        import io

        passwords = self.outputs.get("--passwords-out")
        if reply.secrets and passwords is not None:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(["address", "password"])
            for secret in reply.secrets:
                writer.writerow([secret.label.removeprefix("password of "), secret.value])
            _write_private(passwords, out.getvalue())
            reply.notes.append(f"{len(reply.secrets)} generated passwords were written to "
                               f"{passwords} (mode 0600); they are shown nowhere else.")
            reply.secrets = []
        data = reply.data if isinstance(reply.data, dict) else {}
        report = self.outputs.get("--report")
        if report is not None and isinstance(data.get("bad"), list):
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(["line", "key", "reason"])
            for bad in data["bad"]:
                writer.writerow([bad.get("line"), bad.get("key"), bad.get("reason")])
            with open(report, "w", encoding="utf-8", newline="") as handle:
                handle.write(out.getvalue())
            reply.notes.append(f"The bad rows were written to {report}.")
        target = self.outputs.get("--csv")
        if target is not None and reply.ok and isinstance(data.get("csv"), str):
            _write_private(target, data["csv"])
            reply.notes.append(f"Written to {target} (mode 0600: it holds password hashes).")


def _write_private(path: str, text: str) -> None:
    """A file only its owner reads (mode 0600, also when it was there before)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


class Screens:
    """podoctl's rich consoles (stdout and stderr), made when first used: 'podoctl --json'
    uses none, and does not import rich."""

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self._out = out
        self._err = err

    @property
    def out(self) -> Console:
        if self._out is None:
            from podod.podoctl_view import _Console

            self._out = _Console(soft_wrap=True)  # long lines stay whole for scripts and logs
            if not self._out.is_terminal:
                self._out.width = 10_000  # piped: never fold an address in a table cell
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from podod.podoctl_view import _Console

            self._err = _Console(stderr=True, soft_wrap=True)
        return self._err


def _quiet(_message: dict[str, Any]) -> None:
    """--json: progress is not shown."""


def _main(argv: list[str]) -> int:
    screens = Screens()
    try:
        opts, rest = parse_globals(argv)
    except ValueError as exc:
        print(f"podoctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if opts["help"] or not rest:
        print(USAGE, end="")
        return EXIT_OK if opts["help"] else EXIT_USAGE
    try:
        files, rest = ClientFiles.take(rest)
        if "--generate-passwords" in rest and "--passwords-out" not in files.outputs:
            raise ValueError("--generate-passwords needs --passwords-out FILE: generated "
                             "passwords are written only to that file (mode 0600), never to "
                             "the terminal")
        files.read_input()
    except ValueError as exc:
        print(f"podoctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    real = opts["execute_real"]
    if real and not opts["yes"] and not sys.stdin.isatty():
        print("podoctl: refusing a real change without a terminal to confirm on; add --yes "
              "to confirm it on the command line", file=sys.stderr)
        return EXIT_USAGE

    progress: Any = _quiet
    if not opts["json"]:
        from podod.podoctl_view import ProgressView

        progress = ProgressView(screens.err, quiet=False)
    try:
        conn = Connection(opts["socket"])
    except Unreachable as exc:
        print(f"podoctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    sent_real = False
    # podoctl changes nothing in a reply it only prints as JSON: a large one goes through.
    raw_from = RAW_BYTES if opts["json"] and not files.outputs else None
    answer: dict[str, Any] | bytes
    try:
        payload: dict[str, Any] = {"argv": rest, "execute_real": False, "stdin": None}
        if real and not opts["yes"]:
            from podod.bus.context import Reply

            plan = Reply.from_dict(_strip(conn.request(payload, progress, files.stdin)))
            _close(progress)
            if not plan.ok or not plan.sandbox:
                return _finish(plan, opts, screens)
            from podod.podoctl_view import render

            # Asked on the terminal even when the output goes to a pipe ('| tee log').
            console, err = screens.out, screens.err
            render(plan, console if console.is_terminal else err, err, asking=True)
            sys.stderr.write("Apply this change for real? [y/N] ")
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            said = line.strip().lower()
            if said not in ("y", "yes"):
                print("Nothing was changed.")
                return EXIT_OK
            payload = {"argv": ["confirm", plan.plan_id or ""], "execute_real": False}
        elif real:
            payload["execute_real"] = True
        sent_real = real
        answer = conn.request(payload, progress, files.stdin, raw_from=raw_from)
    except InputRefused as exc:  # the two passwords differ
        print(f"podoctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"podoctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (json.JSONDecodeError, ConnectionError, OSError) as exc:
        print(f"podoctl: the connection to podod failed ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (EOFError, KeyboardInterrupt):
        if sent_real:  # the daemon goes on with a request it has received
            print("\nInterrupted while podod was applying the change: it may still be "
                  "completed; see 'podoctl audit list'.", file=sys.stderr)
        else:
            print("\nNothing was changed.", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _close(progress)
        conn.close()
    if isinstance(answer, bytes):
        print_raw(answer, sys.stdout.buffer)
        sys.stdout.flush()
        return EXIT_OK
    from podod.bus.context import Reply

    reply = Reply.from_dict(_strip(answer))
    try:
        files.write(reply)
    except OSError as exc:
        print(f"podoctl: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        if reply.secrets:
            print("podoctl: the generated passwords were not written anywhere; give the "
                  "mailboxes new ones with 'user reset-password'", file=sys.stderr)
            reply.secrets = []
        _finish(reply, opts, screens)
        return EXIT_FAILED
    if "--csv" not in files.outputs and not opts["json"] and reply.ok and \
            isinstance(reply.data, dict) and isinstance(reply.data.get("csv"), str) and \
            len(rest) >= 2 and rest[1] == "export":
        sys.stdout.write(reply.data["csv"])  # the CSV itself, for '> file' or a pipe
        sys.stdout.flush()
        from rich.text import Text

        screens.err.print(Text(reply.message, style="dim"))
        return EXIT_OK
    return _finish(reply, opts, screens)


def _close(progress: Any) -> None:
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def _strip(message: dict[str, Any] | bytes) -> dict[str, Any]:
    message = dict(json.loads(message) if isinstance(message, bytes) else message)
    message.pop("type", None)
    return message


# A list longer than this is streamed as it is encoded, a few elements per line, in chunks
# (json.dumps with indent is pure Python: 1 s for 100 000 mailboxes and their table).
STREAM_ITEMS = 1000
_CHUNK = 1000  # elements per write
_LINE = 20  # elements per line of a streamed list


def _big(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) > STREAM_ITEMS
    if isinstance(value, dict):
        return any(_big(v) for v in value.values())
    return False


def write_json(value: Any, out: Any) -> None:
    """``value`` as JSON on ``out``, control characters escaped (``JSON_ESCAPES``). Small
    values are indented as usual; long lists stream one element per line."""
    from podod.bus.render import JSON_ESCAPES

    if not _big(value):
        text = json.dumps(value, default=str, indent=2, ensure_ascii=False)
        out.write(text.translate(JSON_ESCAPES) + "\n")
        return
    encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
    _stream(value, "", encode, out)
    out.write("\n")


def _stream(value: Any, indent: str, encode: Callable[[Any], str], out: Any) -> None:
    from podod.bus.render import JSON_ESCAPES

    inner = indent + "  "
    if isinstance(value, dict) and _big(value):
        out.write("{")
        for i, (key, item) in enumerate(value.items()):
            out.write(("," if i else "") + "\n" + inner + encode(str(key)).translate(
                JSON_ESCAPES) + ": ")
            _stream(item, inner, encode, out)
        out.write("\n" + indent + "}")
    elif isinstance(value, list) and _big(value):
        # Elements a line at a time cost a call of the encoder each (1.2 s for 200 000);
        # _LINE of them per line go through its C code at once.
        out.write("[")
        for start in range(0, len(value), _CHUNK):
            lines = [encode(value[i:i + _LINE])[1:-1]
                     for i in range(start, min(start + _CHUNK, len(value)), _LINE)]
            out.write(("," if start else "") + "\n" + inner + (",\n" + inner).join(
                lines).translate(JSON_ESCAPES))
        out.write("\n" + indent + "]")
    else:
        out.write(encode(value).translate(JSON_ESCAPES))


def _finish(reply: Reply, opts: dict[str, Any], screens: Screens) -> int:
    if opts["json"]:
        write_json(reply.to_dict(), sys.stdout)
        sys.stdout.flush()
    else:
        from podod.podoctl_view import render

        render(reply, screens.out, screens.err)
    if reply.ok:
        return EXIT_OK
    code = reply.exit_code  # the bus's mapping of the reply's status (podod.bus.status)
    return code if code in (EXIT_FAILED, EXIT_USAGE) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
