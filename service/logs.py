"""Structured logs: one JSON object per line, extra fields included.

Every line written while a request is served carries its `request_id` (`REQUEST_ID`,
set by the HTTP layer, `service/app.py`). Customer ids go into logs as extra fields
named in `CUSTOMER_FIELDS` (never inside the message text), so the formatter can hash
them: a salted SHA-256 prefix (`sha256:` and 16 hex digits) unless configured to log
them as they are. Secrets never reach a log: API keys are only ever held hashed, and
settings keep them as `SecretStr`.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import secrets
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

#: The id of the request being served (None outside requests).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: Extra fields holding a customer id, hashed unless the formatter logs them as they are.
CUSTOMER_FIELDS = frozenset({"customer_id"})


class JsonFormatter(logging.Formatter):
    def __init__(self, customer_ids: bool = False, salt: str | None = None) -> None:
        super().__init__()
        self.customer_ids = customer_ids
        self._salt = (salt if salt is not None else secrets.token_hex(16)).encode()

    def customer_ref(self, customer_id: object) -> object:
        """How a customer id shows in a log line."""
        if customer_id is None or self.customer_ids:
            return customer_id
        digest = hashlib.sha256(self._salt + str(customer_id).encode()).hexdigest()
        return f"sha256:{digest[:16]}"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = self.customer_ref(value) if key in CUSTOMER_FIELDS else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO", customer_ids: bool = False, salt: str | None = None) -> None:
    """JSON lines on stderr for the root logger and uvicorn's (its access log off)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(customer_ids, salt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
