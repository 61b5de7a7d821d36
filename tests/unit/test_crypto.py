import pytest

from rtbook.crypto import DecryptError, decrypt, encrypt, encrypt_gcm
from rtbook.exceptions import ConfigError

KEY = "supabaserealtime"


@pytest.mark.parametrize(
    ("plain", "cipher"),
    [
        ("postgres", "sWBpZNdjggEPTQVlI52Zfw=="),
        ("supabase_admin", "uxbEq/zz8DXVD53TOI1zmw=="),
        ("5432", "+enMDFi1J/3IrrquHHwUmA=="),
        ("supabase_db_sylvester", "f23Hm+RKKCxIK6ehAjN45GlQ0FDUt0uPXpwEKlJrfrg="),
    ],
)
def test_known_answer_vectors(plain, cipher):
    assert encrypt(plain, KEY) == cipher
    assert decrypt(cipher, KEY) == plain


def test_wrong_key_is_a_decrypt_error():
    with pytest.raises(DecryptError):
        decrypt(encrypt("some-jwt-secret-value-long-enough", KEY), "0123456789abcdef")


def test_key_length_is_checked_and_named():
    with pytest.raises(ConfigError, match="DB_ENC_KEY must be exactly 16 bytes, got 15"):
        encrypt("x", "supabaserealtim")


def test_gcm_round_trip_and_prefix():
    key = "k" * 32
    stored = encrypt_gcm("secret-value", key)
    assert stored.startswith("g1:")
    assert decrypt(stored, gcm_key=key) == "secret-value"
    with pytest.raises(DecryptError):
        decrypt(stored, gcm_key="j" * 32)
