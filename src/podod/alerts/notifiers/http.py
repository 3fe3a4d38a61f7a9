"""A shared aiohttp session for the HTTP notifiers, and error messages that never show a
secret: a URL is named by its scheme and host only (webhook URLs often carry a token)."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from podod import __version__
from podod.alerts.notify import NotifyError

USER_AGENT = f"podod/{__version__}"


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class HttpClient:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT})
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> str:
        """POST ``body``; a non-2xx answer or a connection failure is a NotifyError."""
        try:
            async with self.session().post(url, data=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                if resp.status >= 300:
                    raise NotifyError(f"{where(url)} answered HTTP {resp.status}: "
                                      f"{text.strip()[:200]}")
                return text
        except aiohttp.ClientError as exc:
            raise NotifyError(f"cannot reach {where(url)} ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
