"""EC2 instance metadata (IMDSv2): a PUT for a session token, then GETs carrying it.

IMDSv1 (a plain GET) is off on well-configured instances, so it is not tried. The endpoint is
a setting only so a test can point it at a fake on 127.0.0.1. Calls block (urllib): callers run
them in a thread. Whatever the endpoint answers, a call returns text, None (404: not there) or
raises ImdsError with a one-line reason; it never raises anything else, so garbage from the
metadata service can cost a warning, never the agent.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Final

from agent.settings import DEFAULT_IMDS_ENDPOINT, Settings

# Names of the IMDSv2 protocol, not credentials.
TOKEN_PATH: Final = "/latest/api/token"  # noqa: S105
METADATA_PREFIX: Final = "/latest/meta-data/"
TOKEN_TTL_HEADER: Final = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105
TOKEN_HEADER: Final = "X-aws-ec2-metadata-token"  # noqa: S105
TOKEN_TTL_S: Final = 21600
# A token is renewed this long before it expires.
TOKEN_RENEW_MARGIN_S: Final = 60
# Every documented answer is short; anything longer is not metadata.
MAX_ANSWER_BYTES: Final = 64 * 1024
_SHOWN_CHARS: Final = 60


class ImdsError(Exception):
    """The metadata service could not be reached or answered something unusable; the message
    is one line naming the path and why."""


def metadata_disabled(settings: Settings) -> bool:
    """The standard AWS switch turns off the real endpoint (a test's fake stays reachable)."""
    disabled = os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
    return disabled and settings.imds_endpoint_url.rstrip("/") == DEFAULT_IMDS_ENDPOINT


def shown(text: str | bytes) -> str:
    """A short, one-line, printable rendering of an answer, for a warning."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
    return repr(text)


class Imds:
    """An IMDSv2 session; thread-safe (one token shared, renewed before it expires)."""

    def __init__(self, endpoint_url: str, timeout_s: float) -> None:
        self.base = endpoint_url.rstrip("/")
        self._timeout_s = timeout_s
        # No proxies: a proxy would forward the metadata request off the host.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    def get(self, path: str) -> str | None:
        """The text at /latest/meta-data/<path>; None when there is none (404)."""
        try:
            return self._get(path, self._session_token())
        except _Unauthorized:
            pass
        # The token expired or the service restarted: one new session, then give up.
        try:
            return self._get(path, self._session_token(renew=True))
        except _Unauthorized:
            raise ImdsError(self.where(path) + "the session token is refused (HTTP 401)") from None

    def where(self, path: str) -> str:
        """The start of a message about `path`: `instance metadata at URL (path): `."""
        return f"instance metadata at {self.base} ({path}): "

    def _session_token(self, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None or time.monotonic() > self._token_expires:
                request = urllib.request.Request(  # noqa: S310 - settings admit http:// only
                    self.base + TOKEN_PATH,
                    method="PUT",
                    headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_S)},
                )
                status, body = self._open(request, "api/token")
                token = body.strip()
                if status != 200 or not token or len(token) > 1024 or not token.isprintable():
                    raise ImdsError(self.where("api/token") + f"no session token (HTTP {status})")
                self._token = token
                self._token_expires = time.monotonic() + TOKEN_TTL_S - TOKEN_RENEW_MARGIN_S
            return self._token

    def _get(self, path: str, token: str) -> str | None:
        request = urllib.request.Request(  # noqa: S310 - settings admit http:// only
            self.base + METADATA_PREFIX + path, headers={TOKEN_HEADER: token}
        )
        status, body = self._open(request, path)
        if status == 404:
            return None
        if status == 401:
            raise _Unauthorized
        if status != 200:
            raise ImdsError(self.where(path) + f"HTTP {status}")
        return body

    def _open(self, request: urllib.request.Request, path: str) -> tuple[int, str]:
        """(status, text) of one request; ImdsError for anything that is not an HTTP answer
        of readable text."""
        try:
            try:
                with self._opener.open(request, timeout=self._timeout_s) as response:
                    status, raw = response.status, response.read(MAX_ANSWER_BYTES + 1)
                    # read(n) returns what came when the connection closes early; the header
                    # said how much should have come.
                    if len(raw) <= MAX_ANSWER_BYTES and response.length:
                        raise http.client.IncompleteRead(raw, response.length)
            except urllib.error.HTTPError as error:
                with error:
                    status, raw = error.code, b""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            what = f"{type(exc).__name__}: {shown(str(reason))}"
            raise ImdsError(self.where(path) + what) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise ImdsError(self.where(path) + f"answer longer than {MAX_ANSWER_BYTES} bytes")
        try:
            return status, raw.decode()
        except UnicodeDecodeError:
            raise ImdsError(self.where(path) + f"answer is not text: {shown(raw)}") from None


class _Unauthorized(Exception):
    pass
