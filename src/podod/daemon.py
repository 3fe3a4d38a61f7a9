"""Wiring and lifecycle: load plugins, start components and frontends, notify systemd, and
handle TERM/INT (graceful stop) and HUP (reload; a bad new config keeps the old one)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from podod import __version__, sdnotify
from podod.api.auth import ApiAuth
from podod.builtins import BUILTIN_MODULES
from podod.bus.audit import AuditLog
from podod.bus.core import CommandBus
from podod.config import Config, load_config
from podod.errors import ConfigError, PododError
from podod.events import ConfigRejected, ConfigReloaded, DaemonStarted, DaemonStopping, EventBus
from podod.frontends.unix_socket import UnixSocketFrontend
from podod.logs import setup_logging
from podod.plugins import Registry, load_builtins, load_plugins
from podod.runtime import Runtime
from podod.state import StateDB

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, config_path: Path | None) -> None:
        registry = Registry(config.plugins.settings)
        self.runtime = Runtime(
            config=config, config_path=config_path, events=EventBus(), registry=registry,
            state=StateDB(Path(config.state_dir) / "state.db"),
        )
        self.socket = UnixSocketFrontend(self.runtime)
        self._stop = asyncio.Event()
        self._stop_reason = "stopped"
        self._started: list[tuple[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        rt = self.runtime
        t0 = time.monotonic()
        await self.socket.ensure_free()  # a second podod must not touch the first one's state
        Path(rt.config.state_dir).mkdir(parents=True, exist_ok=True)
        await rt.state.open()
        audit = AuditLog(rt.state, rt.config.audit.key_file, rt.config.audit.head_file)
        await audit.setup()
        rt.bus = CommandBus(rt, audit)
        rt.api_auth = ApiAuth(rt)
        await rt.api_auth.start()
        load_builtins(rt.registry, BUILTIN_MODULES)
        load_plugins(rt.registry, rt.config.plugins.dirs,
                     use_entry_points=rt.config.plugins.entry_points,
                     disabled=rt.config.plugins.disabled)
        await rt.events.start()
        for spec in rt.registry.components.values():
            try:
                component = spec.factory(rt)
                if component is None:  # not configured: nothing to run
                    continue
                await component.start()
            except PododError:
                raise
            except Exception as exc:  # an optional part must not take the daemon down
                # One line (a port in use is no bug); the traceback at debug level.
                reason = str(exc) if isinstance(exc, OSError | RuntimeError) and str(exc) \
                    else f"{type(exc).__name__}: {exc}"
                log.error("component %s failed to start: %s", spec.name, reason)
                log.debug("component %s failed to start", spec.name, exc_info=True)
                info = rt.registry.plugins.get(spec.plugin)
                if info is not None:
                    info.error = f"component {spec.name} failed to start: {reason}"
                continue
            rt.components[spec.name] = component
            self._started.append((spec.name, component))
        await self.socket.start()
        rt.events.publish(DaemonStarted(version=__version__))
        sdnotify.notify(f"READY=1\nSTATUS=podod {__version__} running\nMAINPID={os.getpid()}")
        interval = sdnotify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval)))
        log.info("podod %s ready in %.0f ms (socket %s, %d commands, %d plugins)",
                 __version__, (time.monotonic() - t0) * 1000, self.socket.path,
                 len(rt.registry.commands), len(rt.registry.plugins))
        # What start-up built (modules, classes, settings: objects that live as long as the
        # daemon) is set aside from the cyclic garbage collector: its full collections, which
        # a large reply's tens of thousands of rows set off, walked all of it each time (a
        # fifth of a 30 000-mailbox listing's 120 ms in the daemon). Collected first, so no
        # start-up garbage is kept; after READY, so a start does not wait for it.
        gc.collect()
        gc.freeze()

    async def _watchdog(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def _on_sighup(self) -> None:
        # Keep a reference (the loop holds tasks weakly); reloads run one after the other.
        task = asyncio.ensure_future(self._reload_serialized())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_serialized(self) -> bool:
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            return await self.reload()

    async def reload(self) -> bool:
        """Re-read the config; keep the running one if the new one is not valid."""
        rt = self.runtime
        path = rt.config_path
        if path is None:
            return False
        sdnotify.notify("RELOADING=1")
        try:
            new = load_config(path)
            if new.socket.path != rt.config.socket.path or new.state_dir != rt.config.state_dir:
                raise ConfigError(f"{path.name}: socket.path and state_dir cannot change on "
                                  "reload; restart podod for that")
        except PododError as exc:
            reason = exc.message.replace("\n", "; ")
            log.error("reload rejected, keeping the running configuration: %s", reason)
            rt.events.publish(ConfigRejected(path=str(path), reason=reason))
            sdnotify.notify("READY=1\nSTATUS=reload rejected: " + reason[:200])
            return False
        rt.config = new
        setup_logging(new.log.level, new.log.format)
        for name, component in self._started:
            reload = getattr(component, "reload", None)
            if reload is not None:
                try:
                    await reload(new)
                except Exception:
                    log.exception("component %s failed to apply the new configuration", name)
        rt.events.publish(ConfigReloaded(path=str(path)))
        log.info("configuration reloaded from %s", path)
        sdnotify.notify("READY=1\nSTATUS=podod running (reloaded)")
        return True

    async def stop(self) -> None:
        rt = self.runtime
        sdnotify.notify("STOPPING=1")
        log.info("stopping: %s", self._stop_reason)
        rt.events.publish(DaemonStopping(reason=self._stop_reason))
        await self.socket.stop()
        for task in self._tasks:
            task.cancel()
        for name, component in reversed(self._started):
            try:
                await asyncio.wait_for(component.stop(), 10)
            except Exception:
                log.exception("component %s did not stop cleanly", name)
        await rt.events.drain(1.0)
        await rt.events.stop()
        if rt.api_auth is not None:
            await rt.api_auth.close()
        await rt.state.close()
        log.info("stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        await self._stop.wait()
        await self.stop()


def run(config_path: Path) -> int:
    config = load_config(config_path)
    setup_logging(config.log.level, config.log.format)
    daemon = Daemon(config, config_path.resolve())
    try:
        asyncio.run(daemon.run())
    except PododError as exc:
        log.error("%s", exc.message)
        return exc.exit_code
    except OSError as exc:  # a folder it cannot create, a socket path it cannot bind, ...
        where = f": {exc.filename}" if exc.filename else ""
        log.error("podod cannot start: %s%s", exc.strerror or exc, where)
        return 1
    return 0
