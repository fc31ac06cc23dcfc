"""The one structlog setup: JSON lines in production, console on a TTY, stdlib loggers routed in.

Context (target, account, region, service) is bound with structlog.contextvars by the reconciler
and merged into every line, including botocore's own log records. A last processor removes values
of keys that look like credentials, as a backstop: secrets are meant never to reach a log call.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(
    r"(?i)(secret|password|passwd|token|credential|authorization|access_key|session_key|external_id)"
)
_REDACTED = "[redacted]"
# Pre-signed URLs and signed headers carry credentials in their query string.
_SIGNED = re.compile(r"(X-Amz-(Credential|Signature|Security-Token)=)[^&\s\"']+", re.IGNORECASE)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event" and _SECRET_KEYS.search(key):
            event[key] = _REDACTED
        elif isinstance(event[key], str) and "X-Amz-" in event[key]:
            event[key] = _SIGNED.sub(r"\1" + _REDACTED, event[key])
    return event


def setup_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact,
    ]
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries: their warnings and errors still come through the same pipeline.
    for name in ("botocore", "aiobotocore", "urllib3", "aiohttp.access", "werkzeug"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
