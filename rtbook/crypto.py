"""Realtime-compatible encryption of tenant secrets.

Realtime (``Realtime.Crypto``) stores ``tenants.jwt_secret`` and the five database settings of
the ``postgres_cdc_rls`` extension encrypted. The default cipher, and the only one before
v2.129.0, is AES-128-ECB keyed with the raw bytes of ``DB_ENC_KEY`` (exactly 16 bytes),
PKCS#7 padding, standard base64 with ``=`` padding. From v2.129.0 values may instead be
``g1:`` + base64(IV 12 bytes | tag 16 bytes | ciphertext), AES-256-GCM keyed with
``DB_ENC_KEY_GCM`` (32 bytes).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rtbook.exceptions import ConfigError
from rtbook.secrets import Secret

__all__ = ["GCM_PREFIX", "DecryptError", "decrypt", "encrypt", "encrypt_gcm"]

GCM_PREFIX = "g1:"


class DecryptError(ValueError):
    """A stored value could not be decrypted with the given key (wrong key or not ciphertext)."""


def _key_bytes(key: str | Secret, size: int, name: str) -> bytes:
    raw = (key.reveal() if isinstance(key, Secret) else key).encode()
    if len(raw) != size:
        raise ConfigError(
            f"{name} must be exactly {size} bytes, got {len(raw)}; "
            f"set {name} to a {size}-character ASCII string in the Realtime service's environment"
        )
    return raw


def encrypt(plain: str, key: str | Secret) -> str:
    """Encrypt ``plain`` the way Realtime's default (ECB) cipher does, keyed by ``DB_ENC_KEY``."""
    raw_key = _key_bytes(key, 16, "DB_ENC_KEY")
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    enc = Cipher(algorithms.AES(raw_key), modes.ECB()).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


def encrypt_gcm(plain: str, key: str | Secret, iv: bytes | None = None) -> str:
    """Encrypt ``plain`` with Realtime's ``g1:`` AES-256-GCM format, keyed by ``DB_ENC_KEY_GCM``."""
    raw_key = _key_bytes(key, 32, "DB_ENC_KEY_GCM")
    nonce = iv if iv is not None else os.urandom(12)
    sealed = AESGCM(raw_key).encrypt(nonce, plain.encode(), None)
    # cryptography appends the tag; Realtime stores it before the ciphertext.
    ciphertext, tag = sealed[:-16], sealed[-16:]
    return GCM_PREFIX + base64.b64encode(nonce + tag + ciphertext).decode()


def decrypt(stored: str, key: str | Secret | None = None, gcm_key: str | Secret | None = None) -> str:
    """Decrypt a value stored by Realtime, choosing the cipher from its prefix.

    Raises:
        DecryptError: the value is not ciphertext for the given key.
        ConfigError: the needed key is missing or has the wrong length.
    """
    if stored.startswith(GCM_PREFIX):
        if gcm_key is None:
            raise ConfigError("the value is AES-256-GCM (g1:) encrypted; set DB_ENC_KEY_GCM to decrypt it")
        raw_key = _key_bytes(gcm_key, 32, "DB_ENC_KEY_GCM")
        try:
            blob = base64.b64decode(stored[len(GCM_PREFIX) :], validate=True)
            nonce, tag, ciphertext = blob[:12], blob[12:28], blob[28:]
            return AESGCM(raw_key).decrypt(nonce, ciphertext + tag, None).decode()
        except Exception as exc:
            raise DecryptError("the g1: value does not decrypt with DB_ENC_KEY_GCM") from exc
    if key is None:
        raise ConfigError("set DB_ENC_KEY to decrypt values stored by Realtime")
    raw_key = _key_bytes(key, 16, "DB_ENC_KEY")
    try:
        data = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("the stored value is not base64 ciphertext") from exc
    if not data or len(data) % 16:
        raise DecryptError("the stored value is not AES-ECB ciphertext (length is not a multiple of 16)")
    dec = Cipher(algorithms.AES(raw_key), modes.ECB()).decryptor()
    padded = dec.update(data) + dec.finalize()
    try:
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecryptError("the stored value does not decrypt with DB_ENC_KEY (wrong key?)") from exc
