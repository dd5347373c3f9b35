"""The agent's own logs: structlog JSON, one object per line on stdout (journald stores it).

Task tokens are bearer credentials for a task and the Redshift password is a password: neither
may reach a log line. Code never logs them on purpose (jobs are named by execution id and job
name, tokens by `token_id`), and a processor scrubs every registered sensitive value from every
string of every event, including tracebacks and third-party library messages, as a second line
of defence.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog

REDACTED: Final = "[redacted]"
# Keys whose value is never printed, whatever it is.
SENSITIVE_KEYS: Final = frozenset(
    {"task_token", "tasktoken", "token", "password", "rspassword", "pgpassword", "secret"}
)


class Redactor:
    """A structlog processor that replaces registered sensitive values wherever they appear."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, value: str) -> None:
        if value:
            with self._lock:
                self._values = self._values | {value}

    def discard(self, value: str) -> None:
        with self._lock:
            self._values = self._values - {value}

    def scrub(self, text: str) -> str:
        # Longest first, so a value that contains another is replaced whole.
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: REDACTED if _sensitive(k) else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else would be str()-ed by the renderer: scrub that text instead.
        return self.scrub(str(value))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = REDACTED if _sensitive(key) else self._clean(value)
        return event_dict


def _sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SENSITIVE_KEYS


# One per process: logging itself is process-wide state, and the redactor must see every
# value any part of the agent registers.
redactor: Final = Redactor()


def token_id(token: str) -> str:
    """A short stable name for a task token, safe to log and to correlate lines by."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def configure(stream: TextIO | None = None, level: str = "info") -> None:
    """Send structlog events and the standard library's records (boto3, urllib3) as JSON
    lines to `stream` (stdout by default), all through the redactor."""
    out = stream if stream is not None else sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries only speak up when something is wrong; their debug output carries request
    # bodies, which may hold tokens.
    root.setLevel(logging.WARNING)
