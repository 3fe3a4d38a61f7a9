"""podoctl as an administrator meets it: on a terminal (a real pseudo-terminal), in a pipe,
and with mistakes on its own command line."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from testbed.daemon import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
Start = Callable[..., DaemonProcess]
PLUGINS = {"dirs": [str(REPO / "plugins")], "entry_points": False}


def on_terminal(daemon: DaemonProcess, argv: list[str], answers: dict[bytes, bytes],
                timeout: float = 30.0) -> tuple[str, int]:
    """Run podoctl on a pseudo-terminal; answer each prompt (a byte string it prints) once.
    Returns what the terminal showed and the exit code."""
    pid, fd = pty.fork()
    if pid == 0:  # child: podoctl with the pty as its terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "podod.podoctl", "--socket",
                                    str(daemon.socket_path), *argv], daemon.env)
    shown, pending = b"", dict(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
        for prompt in list(pending):
            if shown.rstrip().endswith(prompt):
                os.write(fd, pending.pop(prompt) + b"\n")
    else:  # still waiting for input nobody gives: stop it (by its pid) and say so
        os.kill(pid, signal.SIGKILL)
        shown += b"\n[podoctl was still waiting and was killed]"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return shown.decode(errors="replace").replace("\r\n", "\n"), os.waitstatus_to_exitcode(status)


def test_a_real_change_asks_on_a_terminal(start_daemon: Start) -> None:
    daemon = start_daemon(plugins=PLUGINS)
    shown, code = on_terminal(daemon, ["example", "note", "first", "--execute-real"],
                              {b"[y/N]": b"n"})
    assert code == 0, shown
    assert "SANDBOX: nothing was changed." in shown and "Would insert note 1" in shown
    assert "repeat the command with --execute-real" not in shown  # podoctl asks instead
    assert shown.rstrip().endswith("Nothing was changed.")
    shown, code = on_terminal(daemon, ["example", "note", "first", "--execute-real"],
                              {b"[y/N]": b"y"})
    assert code == 0, shown
    assert "Apply this change for real? [y/N] y" in shown
    assert shown.rstrip().endswith("Did insert note 1 (text=first)"), shown
    # --yes skips the question, on a terminal too
    shown, code = on_terminal(daemon, ["example", "note", "second", "--execute-real", "--yes"],
                              {})
    assert code == 0 and "[y/N]" not in shown and "kept note 2" in shown, shown
    records = daemon.request(["audit", "list", "--command", "example note"])["data"]
    assert [(r["outcome"], r["execute_real"]) for r in reversed(records)] == [
        ("sandbox", 0), ("sandbox", 0), ("intent", 1), ("ok", 1), ("intent", 1), ("ok", 1)]


def test_the_question_is_asked_on_the_terminal_when_output_is_piped(start_daemon: Start
                                                                    ) -> None:
    """'podoctl ... | tee log': the plan and the question reach the person at the terminal,
    the final reply goes to the pipe."""
    daemon = start_daemon(plugins=PLUGINS)
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podod.podoctl", "--socket", str(daemon.socket_path),
         "example", "note", "piped", "--execute-real"],
        stdin=side, stderr=side, stdout=subprocess.PIPE, env=daemon.env)
    os.close(side)
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        if select.select([main], [], [], 1.0)[0]:
            seen += os.read(main, 4096)
    os.write(main, b"y\n")
    out, _ = proc.communicate(timeout=30)
    os.close(main)
    assert proc.returncode == 0
    assert b"Would insert note 1" in seen and b"Apply this change for real? [y/N]" in seen
    assert out.decode().startswith("kept note 1"), out


def test_password_stdin_asks_twice_on_a_terminal(start_daemon: Start) -> None:
    daemon = start_daemon(plugins=PLUGINS)
    # Only an option asks for a password, not a word that happens to end in -stdin.
    shown, code = on_terminal(daemon, ["example", "hello", "from-stdin"], {}, timeout=20)
    assert code == 0 and "hello, from-stdin!" in shown and "Password" not in shown, shown
    argv = ["user", "reset-password", "a@example.com", "--password-stdin"]
    shown, code = on_terminal(daemon, argv, {b"Password:": b"one-Secret-4711",
                                             b"Repeat the password:": b"two-Secret-4711"})
    assert code == 2, shown
    assert "podoctl: the two passwords differ; nothing was sent" in shown
    assert "Secret" not in shown  # getpass does not echo


def test_sandbox_names_its_plan_and_confirm_applies_it(start_daemon: Start) -> None:
    daemon = start_daemon(plugins=PLUGINS)
    sandbox = daemon.podoctl("example", "note", "planned")
    assert sandbox.returncode == 0 and sandbox.stdout.startswith("SANDBOX: nothing was changed.")
    last = sandbox.stdout.strip().splitlines()[-1]
    assert last.startswith("To apply it, repeat the command with --execute-real, or run: "
                           "podoctl confirm "), last
    plan = last.rsplit(" ", 1)[1].rstrip(".")
    done = daemon.podoctl("confirm", plan)
    assert done.returncode == 0 and "kept note 1" in done.stdout, done
    again = daemon.podoctl("confirm", plan)
    assert again.returncode == 1 and "there is no pending plan" in again.stderr


def test_podoctl_mistakes_and_pipes(start_daemon: Start) -> None:
    daemon = start_daemon(plugins=PLUGINS, socket={"path": "s", "max_request_bytes": 4096})
    bogus = daemon.podoctl("--bogus", "status")
    assert bogus.returncode == 2
    assert bogus.stderr.startswith("podoctl: unknown option --bogus (podoctl's own options")
    # Piped output is never folded: a long value stays on one line for grep.
    status = daemon.podoctl("status")
    assert str(daemon.config_path) in status.stdout
    # A reader that goes away (| head, | true) is no error.
    podoctl = f"{sys.executable} -m podod.podoctl --socket {daemon.socket_path}"
    piped = subprocess.run(["bash", "-c", f"{podoctl} help | true; exit ${{PIPESTATUS[0]}}"],
                           capture_output=True, text=True, env=daemon.env, timeout=60)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    # A request over socket.max_request_bytes gets the daemon's sentence, even when podoctl
    # is still writing as the daemon closes the connection.
    big = daemon.podoctl("user", "reset-password", "a@example.com", "--password-stdin",
                         input="x" * 3_000_000)
    assert big.returncode == 2, big
    assert big.stderr.strip() == "Error: request larger than 4096 bytes; refused"
    assert "Traceback" not in big.stderr + daemon.log()


def test_podoctl_sends_the_input_a_command_declares(start_daemon: Start) -> None:
    """Input is declared, not guessed: data (a CSV file) is read as it is, without a
    "Password:" prompt, and may be larger than a request (socket.max_data_bytes); a secret
    is still asked for on a terminal; progress shows how far a command is."""
    daemon = start_daemon(plugins=PLUGINS, socket={"path": "s", "max_data_bytes": 4_000_000})
    csv = "alice,alice@example.com,2048\n" * 100_000  # 2.9 MB: over max_request_bytes
    counted = daemon.podoctl("example", "count", input=csv)
    assert counted.returncode == 0, counted
    assert "100000 lines, 300000 fields" in counted.stdout
    assert "Password" not in counted.stderr
    assert "… counting (100000/100000)" in counted.stderr  # progress: (message, done, total)
    too_big = daemon.podoctl("example", "count", input=csv * 2)
    assert too_big.returncode == 2, too_big
    assert too_big.stderr.strip() == "Error: input larger than 4000000 bytes; refused"
    # A command that declares no input reads none, even when some is piped in.
    hello = daemon.podoctl("example", "hello", input="ignored\n")
    assert hello.returncode == 0 and "hello, world!" in hello.stdout
    assert "Traceback" not in daemon.log()


def test_requests_are_rate_limited_per_actor(start_daemon: Start) -> None:
    """commands.rate_limit: a burst, then refused with one sentence (audited); root is only
    exempt by default, here it is not."""
    daemon = start_daemon(plugins=PLUGINS, commands={
        "rate_limit": {"per_minute": 1, "burst": 3, "exempt": []}})
    replies = [daemon.request(["example", "hello"]) for _ in range(4)]  # the start used one
    oks = [r["ok"] for r in replies]
    assert oks[0] and not oks[-1] and oks == sorted(oks, reverse=True), oks
    refused = replies[-1]
    assert refused["status"] == "rate-limited" and refused["http_status"] == 429
    assert refused["message"].startswith("unix:root sent more than 1 requests a minute; try "
                                         "again in ")
    # podoctl exits 1 with the sentence; nothing ran
    shown = daemon.podoctl("example", "hello")
    assert shown.returncode == 1 and "try again in" in shown.stderr
    assert "Traceback" not in daemon.log()
