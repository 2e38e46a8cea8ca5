"""JWT attacks. Every forged token is presented from its own source address (so the automatic ban
on repeated failures never decides a result), and each server instance also gets a positive
control: a correct token for it is accepted, so a 401 means the forgery was spotted, not that the
server refuses everything."""

from __future__ import annotations

import time
import urllib.parse

import jwts
from context import ORIGIN, Context, bearer

# The codes a refused `alg: none` may carry: jsonwebtoken has no "none" algorithm, so the header
# does not even parse (token_malformed); a parsed but unlisted alg would be token_alg_not_allowed.
NONE_CODES = {"token_malformed", "token_alg_not_allowed"}


async def alg_none(ctx: Context) -> None:
    for alg in ["none", "None", "NONE", "nOnE"]:
        payload = jwts.claims(ctx.sub("none"), tenant="acme")
        for label, signature in [("empty signature", b""), ("garbage signature", b"sig")]:
            token = jwts.unsigned({"alg": alg, "typ": "JWT"}, payload, signature)
            response, conn = await ctx.upgrade(bearer(token))
            if conn is not None:
                conn.close()
            ctx.checks.record(f"alg {alg!r} ({label}) -> 401", response.status == 401 and response.code in NONE_CODES,
                              f"got {response.describe()}")


async def claim_forgeries(ctx: Context) -> None:
    now = int(time.time())
    secret = ctx.hmac_secret
    cases = [
        ("expired (exp 60 s ago, leeway 5)", jwts.claims(ctx.sub("c"), exp=now - 60, iat=now - 120), "token_expired"),
        ("not yet valid (nbf in 10 min)", jwts.claims(ctx.sub("c"), nbf=now + 600, exp=now + 700), "token_not_yet_valid"),
        ("issued in the future (iat in 10 min)", jwts.claims(ctx.sub("c"), iat=now + 600, exp=now + 700), "token_not_yet_valid"),
        ("wrong aud", jwts.claims(ctx.sub("c"), aud="another-service"), "token_wrong_audience"),
        ("aud array without ours", jwts.claims(ctx.sub("c"), aud=["a", "b"]), "token_wrong_audience"),
        ("wrong iss", jwts.claims(ctx.sub("c"), iss="https://evil.example.com"), "token_wrong_issuer"),
        ("lifetime too long (exp - iat = 3600 > 900)", jwts.claims(ctx.sub("c"), exp=now + 3600), "token_lifetime_too_long"),
        ("missing iat (in required_claims)", jwts.claims(ctx.sub("c"), iat=jwts.DROP), "token_missing_claim"),
        ("missing exp", jwts.claims(ctx.sub("c"), exp=jwts.DROP), "token_missing_claim"),
        ("missing sub", jwts.claims(ctx.sub("c"), sub=jwts.DROP), "token_missing_claim"),
        ("missing jti (single_use_jti)", jwts.claims(ctx.sub("c"), jti=jwts.DROP), "token_missing_claim"),
        ("exp as a string", jwts.claims(ctx.sub("c"), exp=str(now + 300)), "token_invalid_claim"),
        ("empty sub", jwts.claims("", tenant="acme"), "token_invalid_claim"),
    ]
    for label, payload, code in cases:
        await ctx.expect_refusal(f"JWT {label} -> 401 {code}", bearer(jwts.hs256(secret, payload)), 401, code)

    good = ctx.token(ctx.sub("c"))
    await ctx.expect_refusal("JWT tampered payload (sub changed, old signature) -> 401 token_bad_signature",
                             bearer(jwts.tamper_payload(good, sub="admin")), 401, "token_bad_signature")
    await ctx.expect_refusal("JWT tampered signature -> 401 token_bad_signature",
                             bearer(jwts.tamper_signature(ctx.token(ctx.sub("c")))), 401, "token_bad_signature")
    await ctx.expect_refusal("JWT signed with another secret -> 401 token_bad_signature",
                             bearer(jwts.hs256(b"x" * 48, jwts.claims(ctx.sub("c")))), 401, "token_bad_signature")
    await ctx.expect_refusal("JWT HS512 with the right secret (alg not listed) -> 401 token_alg_not_allowed",
                             bearer(jwts.hs256(secret, jwts.claims(ctx.sub("c")), algorithm="HS512")), 401,
                             "token_alg_not_allowed")
    await ctx.expect_refusal("JWT not a JWS ('abc.def') -> 401 token_malformed", bearer("abc.def"), 401,
                             "token_malformed")
    response = await ctx.expect_refusal("no token at all -> 401 token_missing with a bare Bearer challenge",
                                        [("Origin", ORIGIN)], 401, "token_missing")
    ctx.checks.record("401 token_missing carries WWW-Authenticate: Bearer",
                      response.headers.get("www-authenticate") == "Bearer", repr(response.headers.get("www-authenticate")))


async def token_sources(ctx: Context) -> None:
    token = ctx.token(ctx.sub("query"))
    await ctx.expect_refusal("valid token in ?access_token= (query source not configured) -> 401 token_missing",
                             [("Origin", ORIGIN)], 401, "token_missing", path=f"/ws?access_token={urllib.parse.quote(token)}")
    first = ctx.token(ctx.sub("order"))
    second_bad = jwts.tamper_signature(ctx.token(ctx.sub("order")))
    await ctx.expect_refusal("bad token in the header, good one in a cookie -> 401 (no fallback to a later source)",
                             [("Origin", ORIGIN), ("Authorization", f"Bearer {second_bad}"),
                              ("Cookie", f"wsguard_token={first}")], 401, "token_bad_signature")


async def replayed_jti(ctx: Context) -> None:
    token = ctx.token(ctx.sub("replay"))
    response, conn = await ctx.upgrade(bearer(token))
    ctx.expect_status("single-use jti: first use -> 101", response, 101, None)
    if conn is not None:
        await conn.goodbye()
    await ctx.expect_refusal("single-use jti: same token again -> 401 token_replayed", bearer(token), 401,
                             "token_replayed")
    await ctx.expect_refusal("single-use jti: same token from another IP -> 401 token_replayed", bearer(token), 401,
                             "token_replayed")


async def rs256_instance(ctx: Context) -> None:
    """The RS256 instance: HS256 keyed with its own public key (PEM bytes, and PEM minus the final
    newline) must not verify; a real RS256 token does (also through the query source there)."""
    server = ctx.rs256
    payload = jwts.claims(ctx.sub("rsa"))
    response, conn = await ctx.upgrade(bearer(jwts.rs256(ctx.rsa_private_pem, payload)), server=server)
    ctx.expect_status("RS256 instance: genuine RS256 token -> 101", response, 101, None)
    if conn is not None:
        await conn.goodbye()
    token = jwts.rs256(ctx.rsa_private_pem, jwts.claims(ctx.sub("rsa")))
    response, conn = await ctx.upgrade([("Origin", ORIGIN)], server=server, path=f"/ws?access_token={token}")
    ctx.expect_status("RS256 instance (query source on): genuine token in the query -> 101", response, 101, None)
    if conn is not None:
        await conn.goodbye()
    for label, key in [("PEM", ctx.rsa_public_pem), ("PEM without trailing newline", ctx.rsa_public_pem.rstrip(b"\n"))]:
        forged = jwts.hmac_with_key_bytes(key, {"alg": "HS256", "typ": "JWT"}, jwts.claims(ctx.sub("rsa")))
        await ctx.expect_refusal(f"RS256 instance: HS256 signed with the RSA public key ({label}) -> 401 token_alg_not_allowed",
                                 bearer(forged), 401, "token_alg_not_allowed", server=server)
    await ctx.expect_refusal("RS256 instance: RS256 token from another key -> 401 token_bad_signature",
                             bearer(jwts.rs256(ctx.other_private_pem, jwts.claims(ctx.sub("rsa")))), 401,
                             "token_bad_signature", server=server)
    # This instance does not require iat: without it, the remaining validity is the lifetime.
    no_iat = jwts.claims(ctx.sub("rsa"), iat=jwts.DROP, exp=int(time.time()) + 3600)
    await ctx.expect_refusal("RS256 instance: no iat and exp in 1 h (max 900 s) -> 401 token_lifetime_too_long",
                             bearer(jwts.rs256(ctx.rsa_private_pem, no_iat)), 401, "token_lifetime_too_long",
                             server=server)
    no_iat = jwts.claims(ctx.sub("rsa"), iat=jwts.DROP, exp=int(time.time()) + 300)
    response, conn = await ctx.upgrade(bearer(jwts.rs256(ctx.rsa_private_pem, no_iat)), server=server)
    ctx.expect_status("RS256 instance: no iat and exp in 5 min -> 101", response, 101, None)
    if conn is not None:
        await conn.goodbye()
    forged = jwts.unsigned({"alg": "none"}, jwts.claims(ctx.sub("rsa")))
    response, conn = await ctx.upgrade(bearer(forged), server=server)
    ctx.checks.record("RS256 instance: alg none -> 401", response.status == 401 and response.code in NONE_CODES,
                      f"got {response.describe()}")


async def kid_tricks(ctx: Context) -> None:
    """The JWKS instance (keys k1, k2): a `kid` is looked up by exact match, never as a path."""
    server = ctx.jwks
    response, conn = await ctx.upgrade(bearer(jwts.rs256(ctx.rsa_private_pem, jwts.claims(ctx.sub("kid")), kid="k1")),
                                       server=server)
    ctx.expect_status("JWKS instance: genuine token with kid k1 -> 101", response, 101, None)
    if conn is not None:
        await conn.goodbye()
    for kid in ["../../etc/passwd", "/etc/passwd", "../k1", "k1/../k1", "./k1", "k1\u0000", "K1", " k1", "", "*",
                "file:///etc/passwd", "http://127.0.0.1/jwks.json"]:
        token = jwts.rs256(ctx.rsa_private_pem, jwts.claims(ctx.sub("kid")), kid=kid)
        await ctx.expect_refusal(f"JWKS instance: kid {kid!r} -> 401 token_unknown_key", bearer(token), 401,
                                 "token_unknown_key", server=server)
    await ctx.expect_refusal("JWKS instance: no kid -> 401 token_unknown_key",
                             bearer(jwts.rs256(ctx.rsa_private_pem, jwts.claims(ctx.sub("kid")))), 401,
                             "token_unknown_key", server=server)
    await ctx.expect_refusal("JWKS instance: kid k2 on a token signed by k1's key -> 401 token_bad_signature",
                             bearer(jwts.rs256(ctx.rsa_private_pem, jwts.claims(ctx.sub("kid")), kid="k2")), 401,
                             "token_bad_signature", server=server)


ATTACKS = [alg_none, claim_forgeries, token_sources, replayed_jti, rs256_instance, kid_tricks]
