"""rtbook.tokens.verify_jwt gives PyJWT's verdict (PyJWT is the oracle) without importing it."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtbook.tokens import mint_jwt, verify_jwt

SECRET = "a-test-secret-with-at-least-32-characters"
# The oracle (PyJWT) warns about short HMAC keys; the verdicts are what is compared here.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")


def _pyjwt_verdict(token: str, secret: str) -> str:
    try:
        jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "not a JWT"
    try:
        jwt.decode(token, secret, algorithms=["HS256", "HS384", "HS512"],
                   options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        return "bad signature"
    except jwt.InvalidAlgorithmError:
        return "not HS256"
    except jwt.PyJWTError:
        return "invalid"
    return "ok"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_agrees_with_pyjwt_on_signed_tokens(alg: str) -> None:
    token = jwt.encode({"role": "anon", "exp": 1}, SECRET, algorithm=alg)
    assert verify_jwt(token, SECRET) == ({"role": "anon", "exp": 1}, "ok") and _pyjwt_verdict(token, SECRET) == "ok"
    assert verify_jwt(token, SECRET + "x")[1] == "bad signature" == _pyjwt_verdict(token, SECRET + "x")
    assert verify_jwt(token, None)[1] == "no secret"


def test_other_algorithms_and_junk() -> None:
    none_alg = jwt.encode({"role": "anon"}, None, algorithm="none")
    assert verify_jwt(none_alg, SECRET)[1] == "not HS256" == _pyjwt_verdict(none_alg, SECRET)
    for junk in ("", "abc", "a.b", "a.b.c.d", "eyJ!.eyJ.x", "sb_publishable_abcdefgh"):
        assert verify_jwt(junk, SECRET) == (None, "not a JWT")


@settings(max_examples=200, deadline=None)
@given(claims=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
       secret=st.text(min_size=1, max_size=40), other=st.text(min_size=1, max_size=40),
       alg=st.sampled_from(["HS256", "HS384", "HS512"]))
def test_verdicts_match_pyjwt(claims: dict[str, object], secret: str, other: str, alg: str) -> None:
    token = jwt.encode(claims, secret, algorithm=alg)
    for key in (secret, other):
        got = verify_jwt(token, key)[1]
        assert got == _pyjwt_verdict(token, key), (token, key)


def test_minted_tokens_verify() -> None:
    token = mint_jwt(SECRET, "authenticated", sub="u1")
    claims, verdict = verify_jwt(token, SECRET)
    assert verdict == "ok" and claims is not None and claims["role"] == "authenticated" and claims["sub"] == "u1"


def test_verifying_does_not_import_pyjwt() -> None:
    code = "import sys\nfrom rtbook.tokens import verify_jwt\nverify_jwt('a.b.c', 'k')\nprint('jwt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
