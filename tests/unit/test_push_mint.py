"""``push.tokens.mint``: the backend's API for tokens; what it mints a node's ``verify`` accepts,
and every bad argument is a MintError naming it."""

from __future__ import annotations

import math

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chainpush.push.errors import ConfigError, MintError, TokenError
from chainpush.push.tokens import DEFAULT_TTL_S, DEV_SECRET, TokenConfig, mint, verify

SECRET = "s" * 40
NOW = 1_800_000_000.0
WALLET = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


def pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_minted_with_a_secret_is_accepted_by_a_node_config() -> None:
    token = mint("user-42", wallets=[WALLET.lower()], topics=["contract:DemoToken", "state:*"],
                 ttl_s=60, secret=SECRET, now=NOW)
    claims = verify(token, TokenConfig(secret=SECRET), now=NOW)
    assert claims.user == "user-42"
    assert claims.wallets == (WALLET,)  # written EIP-55
    assert claims.topics == ("contract:DemoToken", "state:*")
    assert claims.expires_at == int(NOW) + 60
    assert claims.allows(f"user:{WALLET}") and not claims.allows("contract:Other")
    with pytest.raises(TokenError):
        verify(token, TokenConfig(secret="t" * 40), now=NOW)


def test_default_ttl_and_expires_at() -> None:
    token = mint("alice", secret=SECRET, now=NOW)
    assert verify(token, TokenConfig(secret=SECRET), now=NOW).expires_at == NOW + DEFAULT_TTL_S
    token = mint("alice", secret=SECRET, expires_at=int(NOW) + 5, now=NOW)
    assert verify(token, TokenConfig(secret=SECRET), now=NOW).expires_at == int(NOW) + 5


def test_issuer_and_audience_follow_the_config_unless_given() -> None:
    config = TokenConfig(secret=SECRET, issuer="my-app", audience="push")
    verify(mint("alice", config=config, now=NOW), config, now=NOW)
    with pytest.raises(TokenError, match=r"(?i)audience"):
        verify(mint("alice", config=config, audience="other", now=NOW), config, now=NOW)
    # with a bare secret: the nodes' defaults (iss "chainpush", no aud)
    verify(mint("alice", secret=SECRET, now=NOW), TokenConfig(secret=SECRET), now=NOW)
    with pytest.raises(TokenError, match="iss"):
        verify(mint("alice", secret=SECRET, issuer=None, now=NOW), TokenConfig(secret=SECRET),
               now=NOW)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_private_key_infers_the_algorithm(algorithm: str) -> None:
    key = (rsa.generate_private_key(65537, 2048) if algorithm == "RS256"
           else ec.generate_private_key(ec.SECP256R1()))
    private, public = pem_pair(key)
    token = mint("alice", topics=["*"], private_key=private, now=NOW)
    claims = verify(token, TokenConfig(algorithm=algorithm, public_key=public), now=NOW)
    assert claims.topics == ("*",)
    other = "ES256" if algorithm == "RS256" else "RS256"
    with pytest.raises(MintError, match=f"does not match the private key \\({algorithm}\\)"):
        mint("alice", private_key=private, algorithm=other, now=NOW)


def test_rs256_config_without_private_key_is_a_config_error() -> None:
    _, public = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match="private_key"):
        mint("alice", config=TokenConfig(algorithm="ES256", public_key=public), now=NOW)


def test_dev_config_mints_with_the_dev_secret() -> None:
    config = TokenConfig(dev_mode=True)
    verify(mint("alice", config=config, now=NOW), config, now=NOW)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"user": ""}, "user must be"),
    ({"user": "a\nb"}, "user must be"),
    ({"user": "x" * 257}, "user must be"),
    ({"wallets": ["0x1234"]}, "wallets: '0x1234' is not an address"),
    ({"wallets": WALLET}, "lists of strings"),
    ({"topics": ["contracts:DemoToken"]}, "topic 'contracts:DemoToken' is not a topic"),
    ({"topics": ["user:foo"]}, "is not a topic"),
    ({"topics": ["contract*"]}, "topic pattern"),
    ({"topics": [3]}, "topics must be strings"),
    ({"ttl_s": 0}, "ttl_s must be"),
    ({"ttl_s": -5}, "ttl_s must be"),
    ({"ttl_s": math.inf}, "ttl_s must be"),
    ({"ttl_s": math.nan}, "ttl_s must be"),
    ({"ttl_s": 10, "expires_at": int(NOW) + 10}, "not both"),
    ({"expires_at": int(NOW) - 1}, "expires_at must be"),
    ({"expires_at": 10**12}, "expires_at must be"),
    ({"secret": "short"}, "at least 32"),
    ({"secret": DEV_SECRET}, "dev default"),
    ({"secret": None}, "exactly one of .* got none"),
    ({"config": TokenConfig(secret=SECRET)}, "exactly one of .* got config, secret"),
    ({"algorithm": "RS256"}, "a secret signs HS256"),
    ({"secret": None, "private_key": "not a pem"}, "unencrypted PEM private key"),
    ({"issuer": ""}, "issuer must be"),
])
def test_bad_arguments_name_themselves(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"user": "alice", "secret": SECRET, "now": NOW}
    base.update(kwargs)
    user = base.pop("user")
    with pytest.raises(MintError, match=match):
        mint(user, **base)  # type: ignore[arg-type]


def test_ec_key_on_another_curve_is_refused() -> None:
    private, _ = pem_pair(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(MintError, match="P-256"):
        mint("alice", private_key=private, now=NOW)
