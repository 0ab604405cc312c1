"""Token checks: signature, expiry, claims, topic grants, refusal of weak secrets."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chainpush.push.errors import ConfigError, TokenError, TopicNotAllowed
from chainpush.push.tokens import DEV_SECRET, Claims, TokenConfig, TokenExpired, issue, verify

SECRET = "s" * 40
NOW = 1_800_000_000.0
WALLET = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


def claims(**kw: object) -> Claims:
    base: dict[str, object] = {"user": "alice", "wallets": (WALLET,),
                               "topics": ("contract:*",), "expires_at": int(NOW) + 60}
    base.update(kw)
    return Claims(**base)  # type: ignore[arg-type]


def test_round_trip_hs256() -> None:
    config = TokenConfig(secret=SECRET)
    assert verify(issue(claims(), config, now=NOW), config, now=NOW) == claims()


def test_expired_with_leeway() -> None:
    config = TokenConfig(secret=SECRET, leeway_s=5)
    token = issue(claims(), config, now=NOW)
    verify(token, config, now=NOW + 64)
    with pytest.raises(TokenExpired, match="expired"):
        verify(token, config, now=NOW + 65)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "x" * 5000])
def test_garbage_is_a_token_error(token: str) -> None:
    with pytest.raises(TokenError):
        verify(token, TokenConfig(secret=SECRET), now=NOW)


def test_wrong_secret_issuer_audience_and_none_alg() -> None:
    config = TokenConfig(secret=SECRET)
    token = issue(claims(), TokenConfig(secret="t" * 40), now=NOW)
    with pytest.raises(TokenError, match="Signature"):
        verify(token, config, now=NOW)
    other_issuer = issue(claims(), TokenConfig(secret=SECRET, issuer="evil"), now=NOW)
    with pytest.raises(TokenError):
        verify(other_issuer, config, now=NOW)
    with pytest.raises(TokenError):
        verify(issue(claims(), config, now=NOW), TokenConfig(secret=SECRET, audience="a"), now=NOW)
    unsigned = jwt.encode({"sub": "a", "exp": NOW + 60, "iss": "chainpush"}, None, algorithm="none")
    with pytest.raises(TokenError):
        verify(unsigned, config, now=NOW)


def test_bad_claims() -> None:
    config = TokenConfig(secret=SECRET)
    for payload in (
        {"exp": NOW + 60, "iss": "chainpush"},
        {"sub": "", "exp": NOW + 60, "iss": "chainpush"},
        {"sub": "a", "exp": NOW + 60, "iss": "chainpush", "wallets": "0x1"},
        {"sub": "a", "exp": NOW + 60, "iss": "chainpush", "wallets": ["bob"]},
        {"sub": "a", "exp": NOW + 60, "iss": "chainpush", "topics": [1]},
    ):
        with pytest.raises(TokenError):
            verify(jwt.encode(payload, SECRET, algorithm="HS256"), config, now=NOW)


def test_es256_key_pair() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    signer = TokenConfig(algorithm="ES256", public_key=public, private_key=private)
    node = TokenConfig(algorithm="ES256", public_key=public)
    assert verify(issue(claims(), signer, now=NOW), node, now=NOW).user == "alice"
    # an HS256 token made with the public key as secret must not pass (algorithm confusion)
    with pytest.raises(TokenError):
        verify(jwt.encode({"sub": "a", "exp": NOW + 60}, "x" * 40, algorithm="HS256"), node,
               now=NOW)


def test_weak_secrets_refused_outside_dev_mode() -> None:
    for secret in ("", "short", DEV_SECRET):
        with pytest.raises(ConfigError, match=r"auth\.secret"):
            TokenConfig(secret=secret)
    assert TokenConfig(secret="", dev_mode=True).secret == DEV_SECRET
    with pytest.raises(ConfigError, match="public_key"):
        TokenConfig(algorithm="RS256")
    with pytest.raises(ConfigError, match="algorithm"):
        TokenConfig(algorithm="none", secret=SECRET)


def test_topic_grants() -> None:
    c = claims(topics=("contract:Demo*", "state:CallDemo"))
    assert c.allows("contract:DemoToken")
    assert c.allows("state:CallDemo")
    assert not c.allows("state:CallDemo2")
    assert not c.allows("contract:Other")
    assert c.allows(f"user:{WALLET}")
    assert c.allows(f"user:{WALLET.lower()}")
    assert not c.allows("user:0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2")
    assert claims(topics=("*",)).allows("user:0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2")
    with pytest.raises(TopicNotAllowed):
        c.check("contract:Other")


def test_exact_user_grants_are_normalised_like_subscriptions() -> None:
    lower = "user:0xab8483f64d9c6d1ecf9b849ae677dd3315835cb2"
    checksummed = "user:0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"
    config = TokenConfig(secret="s" * 40)
    tok = issue(Claims(user="u", wallets=(), topics=(lower, "contract:*"), expires_at=2000),
                config, now=1000)
    claims = verify(tok, config, now=1000)
    assert claims.topics == (checksummed, "contract:*")
    assert claims.allows(checksummed)


@pytest.mark.parametrize("exp", [float("inf"), float("-inf"), float("nan"), 1e300, -5])
def test_non_finite_or_absurd_exp_is_a_token_error(exp: float) -> None:
    config = TokenConfig(secret="s" * 40)
    # PyJWT's JSON encoder writes Infinity / NaN, and its decoder reads them back
    tok = jwt.encode({"sub": "a", "exp": exp, "iss": "chainpush"}, config.secret,
                     algorithm="HS256")
    with pytest.raises(TokenError, match="'exp'") as info:
        verify(tok, config, now=1000)
    assert not isinstance(info.value, TokenExpired)


@pytest.mark.parametrize("nbf", [float("inf"), float("nan")])
def test_non_finite_nbf_is_a_token_error(nbf: float) -> None:
    config = TokenConfig(secret="s" * 40)
    tok = jwt.encode({"sub": "a", "exp": 5000, "nbf": nbf, "iss": "chainpush"}, config.secret,
                     algorithm="HS256")
    with pytest.raises(TokenError, match="'nbf'"):
        verify(tok, config, now=1000)


@pytest.mark.parametrize("sub", ["alice\n2026-12-01 INFO forged", "a\x1b[2J", "x" * 257])
def test_sub_must_be_printable_and_bounded(sub: str) -> None:
    config = TokenConfig(secret="s" * 40)
    tok = jwt.encode({"sub": sub, "exp": 5000, "iss": "chainpush"}, config.secret,
                     algorithm="HS256")
    with pytest.raises(TokenError, match="'sub'"):
        verify(tok, config, now=1000)


def test_token_config_repr_hides_the_keys() -> None:
    secret = "the-production-secret-" + "q" * 20
    config = TokenConfig(secret=secret, private_key="-----BEGIN PRIVATE KEY-----abc")
    assert secret not in repr(config) and "PRIVATE KEY" not in repr(config)
    assert "HS256" in repr(config)
    from chainpush.push.config import Settings

    assert secret not in repr(Settings(tokens=config))
