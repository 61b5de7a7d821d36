"""Output hygiene: control characters never reach a terminal or an XML file, and secrets are found in any encoding."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from xml.etree import ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from rtbook.results import CheckResult, Report, Status, printable, xml_safe
from rtbook.secrets import REDACTED, Redactor

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@settings(max_examples=200, deadline=None)
@given(summary=ANY_TEXT, detail=ANY_TEXT, remedy=ANY_TEXT, title=ANY_TEXT)
def test_text_rendering_has_no_control_characters(summary: str, detail: str, remedy: str, title: str) -> None:
    report = Report([CheckResult("a.b", Status.FAIL, title, summary, detail, remedy)], title=title)
    assert not CONTROL.search(str(report))


@settings(max_examples=200, deadline=None)
@given(summary=ANY_TEXT, detail=ANY_TEXT, check_id=ANY_TEXT, status=st.sampled_from(list(Status)))
def test_junit_is_always_well_formed_xml(summary: str, detail: str, check_id: str, status: Status) -> None:
    xml = Report([CheckResult("x." + check_id, status, "t", summary, detail, "fix it")], title=summary).to_junit()
    ET.fromstring(xml.encode("utf-8"))


def test_escape_sequences_are_shown_not_obeyed() -> None:
    hostile = "bad \x1b[2J\x1b]0;pwned\x07 \r done"
    assert printable(hostile) == "bad \\x1b[2J\\x1b]0;pwned\\x07 \\x0d done"
    assert xml_safe("a\x00b\ufffe") == "a\\x00b\\xfffe"
    result = CheckResult("a.b", Status.FAIL, summary=hostile)
    assert "\x1b" not in str(result) and "\\x1b[2J" in str(result)


SECRETS = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=12, max_size=48)
SURROUND = st.binary(max_size=12)


@settings(max_examples=300, deadline=None)
@given(secret=SECRETS, before=SURROUND, after=SURROUND, urlsafe=st.booleans())
def test_base64_at_any_offset_is_redacted(secret: str, before: bytes, after: bytes, urlsafe: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = encode(before + secret.encode() + after).decode()
    out = Redactor([secret]).text(f"Authorization: Basic {blob}")
    assert REDACTED in out
    # What is left cannot be decoded back into the secret.
    leftover = out.split("Basic ", 1)[1].replace(REDACTED, "")
    assert secret not in _decode_loosely(leftover)


def _decode_loosely(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9+/_-]", "", text)
    found = []
    for shift in range(4):
        chunk = cleaned[shift:]
        chunk = chunk[: len(chunk) // 4 * 4]
        for altchars in (b"+/", b"-_"):
            try:
                found.append(base64.b64decode(chunk, altchars=altchars).decode("latin-1"))
            except ValueError:
                continue
    return "\n".join(found)


@settings(max_examples=100, deadline=None)
@given(secret=SECRETS)
def test_url_json_and_hex_forms_are_redacted(secret: str) -> None:
    red = Redactor([secret])
    for form in (
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        json.dumps(secret),
        secret.encode().hex(),
        secret.encode().hex().upper(),
    ):
        out = red.text(f"<{form}>")
        assert REDACTED in out, form
        assert secret not in out


def test_short_ordinary_values_are_left_alone() -> None:
    red = Redactor(["5432", "canary-value-123456"])
    assert red.text("user postgres on port 5432") == "user postgres on port 5432"
    assert red.text("dGhlIHF1aWNrIGJyb3du") == "dGhlIHF1aWNrIGJyb3du"  # unrelated base64 stays
