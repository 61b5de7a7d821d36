import base64
import pickle

import pytest

from rtbook.exceptions import ConfigError
from rtbook.secrets import REDACTED, Redactor, Secret, is_secret_name
from rtbook.target import Target

CANARY = "canary-7f3a9c1e-secret-value"


def test_secret_repr_never_reveals():
    s = Secret(CANARY, "JWT_SECRET")
    assert CANARY not in repr(s) and CANARY not in str(s) and CANARY not in f"{s}"
    assert s.reveal() == CANARY
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_redactor_plain_base64_jwt_bearer_url():
    r = Redactor([CANARY])
    b64 = base64.b64encode(CANARY.encode()).decode()
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    text = f"a {CANARY} b {b64} c {jwt} Authorization: Bearer abcdefghijk postgresql://u:pw123456@h/db ?apikey=zzz"
    out = r.text(text)
    for leak in (CANARY, b64.rstrip("="), jwt, "abcdefghijk", "pw123456", "zzz"):
        assert leak not in out
    assert out.count(REDACTED) >= 5


def test_redactor_data_hides_secret_named_keys():
    out = Redactor().data({"POSTGRES_PASSWORD": "short", "nested": [{"api_key": "x" * 10}], "port": 5432})
    assert out == {"POSTGRES_PASSWORD": REDACTED, "nested": [{"api_key": REDACTED}], "port": 5432}


@pytest.mark.parametrize(
    ("name", "secret"),
    [("JWT_SECRET", True), ("ANON_KEY", True), ("POSTGRES_PASSWORD", True), ("DB_ENC_KEY", True),
     ("POSTGRES_HOST", False), ("KONG_HTTP_PORT", False), ("JWT_EXPIRY", False)],
)
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_target_secrets_come_from_env_and_are_registered(clean_env, monkeypatch):
    monkeypatch.setenv("ANON_KEY", CANARY)
    t = Target(api_url="http://localhost:8000/")
    assert t.api_url == "http://localhost:8000"
    assert t.secret("ANON_KEY").reveal() == CANARY
    assert CANARY not in t.redactor.text(f"x{CANARY}x")
    assert CANARY not in repr(t)
    with pytest.raises(ConfigError, match="SERVICE_ROLE_KEY is not set"):
        t.require_secret("SERVICE_ROLE_KEY")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"db_url": "postgresql://u:pw@localhost/db"}, "must not contain a password"),
        ({"api_url": "localhost:8000"}, "must start with http"),
        ({"timeout": 0}, "positive"),
    ],
)
def test_target_rejects_bad_input(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Target(**kwargs)
