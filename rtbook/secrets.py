"""Secret values and the redactor applied to everything rtbook outputs.

A :class:`Secret` never shows its value in ``repr`` or ``str``. The :class:`Redactor` removes
known secret values, and anything that looks like a JWT or a bearer token, from text and from
nested JSON-like data before it reaches a result, a log, a notebook or an audit record.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "Redactor", "Secret", "is_secret_name", "looks_secret"]

REDACTED = "[redacted]"

# Env var names whose values are secrets. Matched on the upper-cased name.
_SECRET_NAME = re.compile(
    r"(SECRET|PASSWORD|PASSWD|_KEY$|^KEY$|_KEY_|TOKEN|ENC_KEY|APIKEY|API_KEY|CREDENTIAL|PRIVATE)"
)
# Names that match the pattern above but hold no secret.
_NOT_SECRET_NAMES = frozenset({"SECRET_KEY_BASE_LENGTH", "KONG_DNS_ORDER", "JWT_EXPIRY"})

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]{8,})")
_OPAQUE_KEY = re.compile(r"\bsb_(?:publishable|secret)_[A-Za-z0-9_-]{8,}")
# apikey=... in URLs, logs and transcripts.
_QUERY_KEY = re.compile(r"(?i)((?:apikey|api_key|access_token|token|password)=)([^&\s\"']+)")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@/\s]+)(@)")

# Values shorter than this are not redacted by value: "true", "5432" or "postgres" would
# otherwise be scrubbed from every sentence. Short secrets are still hidden in reprs.
MIN_REDACT_LEN = 6


def is_secret_name(name: str) -> bool:
    """Return True when an environment variable name conventionally holds a secret."""
    upper = name.upper()
    return upper not in _NOT_SECRET_NAMES and bool(_SECRET_NAME.search(upper))


def looks_secret(value: str) -> bool:
    """Return True when a value looks like a token or key (a JWT, a bearer token, an sb_ key)."""
    return bool(_JWT.search(value) or _OPAQUE_KEY.search(value) or _BEARER.search(value))


def _b64_cores(raw: bytes) -> Iterable[str]:
    """The base64 and base64url text that ``raw`` always produces, whatever bytes surround it.

    Inside a longer encoded string the secret can start at any byte offset modulo 3. For each
    offset, the characters that mix its bits with a neighbour's are cut from both ends; what is
    left appears verbatim in any encoding that contains the secret at that offset.
    """
    for shift, skip in ((0, 0), (1, 2), (2, 3)):
        whole = (len(raw) + shift) // 3 * 4
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(b"\0" * shift + raw).decode()[skip:whole]
            # A short core would match unrelated base64 by chance; the raw value is still matched.
            if len(core) >= 8:
                yield core


def encoded_forms(value: str) -> set[str]:
    """Every encoded form of ``value`` the redactor looks for (see :class:`Redactor`)."""
    raw = value.encode()
    forms = set(_b64_cores(raw))
    forms.add(urllib.parse.quote(value, safe=""))
    forms.add(urllib.parse.quote_plus(value, safe=""))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(raw.hex())
    forms.add(raw.hex().upper())
    forms.discard(value)
    return forms


class Secret:
    """A secret string whose ``repr`` and ``str`` never reveal it.

    Call :meth:`reveal` where the value is really needed (signing a JWT, connecting).
    """

    __slots__ = ("_name", "_value")

    def __init__(self, value: str, name: str = "") -> None:
        self._value = value
        self._name = name

    def reveal(self) -> str:
        """Return the plain value."""
        return self._value

    @property
    def name(self) -> str:
        """The variable name this secret came from, if known."""
        return self._name

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        label = f" {self._name}" if self._name else ""
        return f"Secret({label.strip() or 'value'}={REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Secret values cannot be pickled; pass the variable name instead")


class Redactor:
    """Removes secret values, JWTs and bearer tokens from text and JSON-like data.

    Known values are also matched in every form they can take on the way out: base64 and
    base64url at any offset inside a longer encoded string (a basic-auth header, a data URL, a
    JWT segment), URL-encoded, JSON-escaped, and hex in either case.
    """

    def __init__(self, values: Iterable[str | Secret] = ()) -> None:
        self._values: set[str] = set()
        self._longest_first: list[str] | None = None  # _values sorted for text(); None after a change
        for value in values:
            self.add(value)

    def add(self, value: str | Secret | None) -> None:
        """Register one more secret value to remove from output."""
        if value is None:
            return
        plain = value.reveal() if isinstance(value, Secret) else value
        if len(plain) < MIN_REDACT_LEN:
            return
        self._values.add(plain)
        self._longest_first = None
        self._values.update(v for v in encoded_forms(plain) if len(v) >= MIN_REDACT_LEN)

    def add_env(self, env: Mapping[str, str]) -> None:
        """Register every value in ``env`` whose name or value looks secret."""
        for name, value in env.items():
            if value and (is_secret_name(name) or looks_secret(value)):
                self.add(value)

    def extend(self, other: Redactor) -> None:
        """Add every value known to ``other``."""
        self._values |= other._values
        self._longest_first = None

    @property
    def count(self) -> int:
        """How many distinct values (including encoded variants) are known."""
        return len(self._values)

    def text(self, text: str) -> str:
        """Return ``text`` with every known secret and token pattern replaced."""
        if not text:
            return text
        # Longest first, so a secret that contains another is removed whole. Sorted once per
        # change, not per call: a record's redaction calls this ten thousand times.
        if self._longest_first is None:
            self._longest_first = sorted(self._values, key=len, reverse=True)
        for value in self._longest_first:
            if value in text:
                text = text.replace(value, REDACTED)
        text = _JWT.sub(REDACTED, text)
        text = _OPAQUE_KEY.sub(REDACTED, text)
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        text = _QUERY_KEY.sub(lambda m: m.group(1) + REDACTED, text)
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
        return text

    def data(self, value: Any) -> Any:
        """Return a deep copy of JSON-like ``value`` with strings redacted and Secrets hidden."""
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                skey = self.text(str(key))
                if isinstance(item, str) and is_secret_name(str(key)) and item:
                    out[skey] = REDACTED
                else:
                    out[skey] = self.data(item)
            return out
        if isinstance(value, list | tuple | set | frozenset):
            return [self.data(item) for item in value]
        return value

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"
