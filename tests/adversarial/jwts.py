"""Tokens for the adversarial suite: good ones, and every forgery the suite throws at the server.

Good tokens are minted with PyJWT exactly as an issuer would. Forgeries that PyJWT refuses to make
(an `alg` of `nOnE`, HS256 keyed with an RSA public key) are assembled by hand from their parts.
Every token carries a fresh `jti`, because the main server runs with `auth.single_use_jti`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt

ISSUER = "https://issuer.example.com"
AUDIENCE = "wsguard"

# A claim value meaning "leave this claim out".
DROP = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(subject: str, **overrides) -> dict:
    """Valid claims for `subject` (5 minutes, fresh jti); `overrides` replace or (with DROP) remove."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def hs256(secret: bytes, payload: dict, headers: dict | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def rs256(private_pem: bytes, payload: dict, kid: str | None = None) -> str:
    return jwt.encode(payload, private_pem, algorithm="RS256", headers={"kid": kid} if kid is not None else None)


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (`alg: none` and friends)."""
    segments = [json.dumps(header, separators=(",", ":")).encode(), json.dumps(payload, separators=(",", ":")).encode()]
    return ".".join([b64url(s) for s in segments] + [b64url(signature)])


def hmac_with_key_bytes(key: bytes, header: dict, payload: dict) -> str:
    """HS256 keyed with arbitrary bytes, e.g. an RSA public key PEM (RS256 -> HS256 confusion)."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def tamper_payload(token: str, **changes) -> str:
    """Rewrites claims but keeps the original signature."""
    header, payload, signature = token.split(".")
    padded = payload + "=" * (-len(payload) % 4)
    decoded = json.loads(base64.urlsafe_b64decode(padded))
    decoded.update(changes)
    return ".".join([header, b64url(json.dumps(decoded, separators=(",", ":")).encode()), signature])


def tamper_signature(token: str) -> str:
    """Flips bits in the first signature byte."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0xFF
    return ".".join([header, payload, b64url(bytes(raw))])
