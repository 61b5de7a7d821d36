"""Canary secrets in a stack's .env never reach any output format of the static checks."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import jwt
import pytest

from rtbook.cli import main
from rtbook.config.stack import Stack
from rtbook.registry import run_checks
from rtbook.target import Target

CANARY_JWT = "canary-jwt-secret-7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e"
CANARY_PG = "canary-pg-password-4b8d2f6a0c4e8b2d"
CANARY_SKB = "canary-secret-key-base-" + "9e1c5a7b3d" * 5
CANARY_DASH = "canary-dashboard-pw-51c3e7a9"
CANARY_RT = "canary-realtime-only-secret-0a1b2c3d4e5f6a7b8c9d"
CANARY_ENC = "canary-enc-key!!"  # 16 bytes
_EXP = int(time.time()) + 400 * 86400
CANARY_ANON = jwt.encode({"role": "anon", "exp": _EXP}, CANARY_JWT)
CANARY_SERVICE = jwt.encode({"role": "service_role", "exp": _EXP}, CANARY_JWT)


def _variants(value: str) -> set[str]:
    raw = value.encode()
    out = {value}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        out.add(enc.decode())
        out.add(enc.decode().rstrip("="))
    return out


def canaries() -> dict[str, set[str]]:
    anon, service = CANARY_ANON, CANARY_SERVICE
    values = {
        "JWT_SECRET": CANARY_JWT,
        "POSTGRES_PASSWORD": CANARY_PG,
        "SECRET_KEY_BASE": CANARY_SKB,
        "DASHBOARD_PASSWORD": CANARY_DASH,
        "REALTIME_DB_ENC_KEY": CANARY_ENC,
        "ANON_KEY": anon,
        "SERVICE_ROLE_KEY": service,
        "hard-coded API_JWT_SECRET": CANARY_RT,
    }
    out = {name: _variants(v) for name, v in values.items()}
    # A JWT's signature segment alone identifies the key material.
    out["ANON_KEY signature"] = {anon.rsplit(".", 1)[1]}
    out["SERVICE_ROLE_KEY signature"] = {service.rsplit(".", 1)[1]}
    return out


@pytest.fixture
def canary_stack(corpus: Path, tmp_path: Path) -> Path:
    d = tmp_path / "stack"
    shutil.copytree(corpus / "official/2026-09-1f37f2a", d)
    anon, service = CANARY_ANON, CANARY_SERVICE
    env = (d / "env.example").read_text()
    env += (
        f"\nJWT_SECRET={CANARY_JWT}\nPOSTGRES_PASSWORD={CANARY_PG}\nSECRET_KEY_BASE={CANARY_SKB}\n"
        f"DASHBOARD_PASSWORD={CANARY_DASH}\nREALTIME_DB_ENC_KEY={CANARY_ENC}\n"
        f"ANON_KEY={anon}\nSERVICE_ROLE_KEY={service}\n"
    )
    (d / ".env").write_text(env)
    # Make checks fail so that details and remedies are rendered: Realtime gets its own (canary) secret.
    compose = d / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("      API_JWT_SECRET: ${JWT_SECRET}\n\n",
                                                   f"      API_JWT_SECRET: {CANARY_RT}\n\n", 1))
    return d


def assert_clean(text: str, where: str) -> None:
    for name, forms in canaries().items():
        for form in forms:
            assert form not in text, f"{name} leaked into {where}"


def test_assert_clean_catches_encoded_forms() -> None:
    for leaked in (CANARY_PG, base64.b64encode(CANARY_PG.encode()).decode().rstrip("="),
                   base64.urlsafe_b64encode(CANARY_JWT.encode()).decode(), CANARY_ANON.rsplit(".", 1)[1]):
        with pytest.raises(AssertionError):
            assert_clean(f"prefix {leaked} suffix", "self-test")


def test_canaries_loaded(canary_stack: Path) -> None:
    stack = Stack.load(canary_stack)
    rt = stack.realtime_service()
    assert rt is not None and rt.environment["API_JWT_SECRET"] == CANARY_RT
    assert rt.environment["DB_PASSWORD"] == CANARY_PG
    assert_clean(repr(stack) + repr(rt) + repr(stack.services), "Stack/Service repr")


def test_report_formats_clean(canary_stack: Path) -> None:
    stack = Stack.load(canary_stack)
    target = Target(stack=stack, docker=False)
    report = run_checks(target, only=("compose.", "env.", "kong.", "envoy."))
    failed = {r.id for r in report if r.failed}
    assert "compose.realtime.jwt_secret" in failed  # the hard-coded canary differs from JWT_SECRET
    assert_clean(str(report), "text")
    assert_clean(report.to_json(), "json")
    assert_clean(report.to_junit(), "junit")
    assert_clean(report._repr_html_(), "html")
    assert_clean(repr([r.evidence for r in report]), "evidence")


@pytest.mark.parametrize("fmt", ["text", "json", "junit"])
def test_cli_outputs_clean(canary_stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           fmt: str) -> None:
    out_file = tmp_path / f"out.{fmt}"
    code = main(["check", "--stack", str(canary_stack), "--no-docker", "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 1
    assert_clean(out + err, f"cli {fmt} stdout")
    if fmt == "json":
        assert json.loads(out)["summary"]["fail"] >= 1
    code = main(["check", "--stack", str(canary_stack), "--no-docker", "--format", fmt, "--output", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 1
    assert_clean(out + err + out_file.read_text(), f"cli {fmt} file")


def test_input_errors_clean(canary_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = canary_stack / ".env"
    env.write_text(env.read_text() + f"\n{CANARY_PG} {CANARY_JWT}\n")
    code = main(["check", "--stack", str(canary_stack), "--no-docker"])
    _, err = capsys.readouterr()
    assert code == 2
    assert_clean(err, "input error")
