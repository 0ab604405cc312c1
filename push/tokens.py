"""Tokens: what a push node accepts, checked with PyJWT (no hand-made crypto).

A token is a JWT (RFC 7519) signed with HS256 and a shared secret, or RS256/ES256 with a key pair
(the app's backend keeps the private key, push nodes get the public key). Claims:

* ``sub`` (required): the user id;
* ``exp`` (required): expiry, unix seconds; ``iat`` optional;
* ``wallets``: checksummed addresses of the user; grants ``user:<wallet>`` for each;
* ``topics``: topic patterns the user may subscribe to: an exact topic, a prefix ending in ``*``
  (``contract:*``), or ``*`` for all;
* ``iss`` / ``aud``: checked when the node is configured with an issuer / audience.

Pure: never awaits, no I/O. The clock is a parameter so tests can move it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from push.errors import ConfigError, TokenError, TopicNotAllowed
from push.records import normalise_topic

#: secrets a node refuses outside dev mode: empty, short, or the well-known dev default.
DEV_SECRET = "chainpush-dev-secret-do-not-use-in-production"
MIN_SECRET_CHARS = 32
ALGORITHMS = ("HS256", "RS256", "ES256")
#: largest ``exp`` / ``nbf`` accepted (year 9999): beyond it, a time is a bug or an attack
MAX_NUMERIC_DATE = 253402300799
MAX_SUB_CHARS = 256
_WALLET = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenConfig:
    """How tokens are signed and checked. ``public_key`` is PEM text for RS256/ES256."""

    algorithm: str = "HS256"
    #: never in a repr (a config printed in a traceback or a debug log must not leak it)
    secret: str = field(default="", repr=False)
    public_key: str | None = None
    private_key: str | None = field(default=None, repr=False)
    issuer: str | None = "chainpush"
    audience: str | None = None
    leeway_s: float = 5.0
    dev_mode: bool = False

    def __post_init__(self) -> None:
        for name in ("issuer", "audience"):
            if getattr(self, name) == "":  # TOML has no null: "" means "not checked"
                object.__setattr__(self, name, None)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"auth.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.algorithm == "HS256":
            if not self.secret and self.dev_mode:
                # dev mode only: a well-known secret, refused everywhere else
                object.__setattr__(self, "secret", DEV_SECRET)
            secret = self.secret
            weak = not secret or secret == DEV_SECRET or len(secret) < MIN_SECRET_CHARS
            if weak and not self.dev_mode:
                raise ConfigError(
                    "auth.secret must be set to a random string of at least "
                    f"{MIN_SECRET_CHARS} characters outside dev mode (got "
                    f"{'an empty' if not self.secret else 'a default or short'} secret)"
                )
        elif self.public_key is None:
            raise ConfigError(f"auth.public_key (PEM) is required for {self.algorithm}")
        if self.leeway_s < 0:
            raise ConfigError(f"auth.leeway_s must be >= 0, got {self.leeway_s}")

    @property
    def verify_key(self) -> str:
        return self.secret if self.algorithm == "HS256" else str(self.public_key)

    @property
    def signing_key(self) -> str:
        if self.algorithm == "HS256":
            return self.secret
        if self.private_key is None:
            raise ConfigError(
                f"auth.private_key (PEM) is required to issue {self.algorithm} tokens"
            )
        return self.private_key


@dataclass(frozen=True, slots=True)
class Claims:
    """The checked content of a token."""

    user: str
    wallets: tuple[str, ...]
    topics: tuple[str, ...]
    expires_at: int

    def allows(self, topic: str) -> bool:
        """True if this token grants ``topic``."""
        kind, _, rest = topic.partition(":")
        if kind == "user" and rest.lower() in {w.lower() for w in self.wallets}:
            return True
        for pattern in self.topics:
            if pattern == topic or pattern == "*":
                return True
            if pattern.endswith("*") and topic.startswith(pattern[:-1]):
                return True
        return False

    def check(self, topic: str) -> None:
        if not self.allows(topic):
            raise TopicNotAllowed(f"token of user {self.user!r} does not grant topic {topic!r}")


def issue(claims: Claims, config: TokenConfig, *, now: float) -> str:
    """Sign ``claims`` (the app backend's or the dev login's side)."""
    payload: dict[str, Any] = {
        "sub": claims.user, "wallets": list(claims.wallets), "topics": list(claims.topics),
        "exp": claims.expires_at, "iat": int(now),
    }
    if config.issuer is not None:
        payload["iss"] = config.issuer
    if config.audience is not None:
        payload["aud"] = config.audience
    return jwt.encode(payload, config.signing_key, algorithm=config.algorithm)


def _strings(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenError(f"token claim {name!r} must be a list of strings")
    return tuple(value)


def _time_claim(payload: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2): ``None`` when absent; a :class:`TokenError` unless a
    finite number in range. JSON parsers (Python's, PyJWT's) accept ``Infinity`` and ``NaN``:
    ``exp: NaN`` compared false with every clock and ``int(Infinity)`` raised OverflowError,
    which closed the connection with 1011 and a traceback instead of 4001."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"token claim {name!r} must be a number")
    if not math.isfinite(value) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise TokenError(f"token claim {name!r} must be a finite time in 0..{MAX_NUMERIC_DATE}")
    return float(value)


def verify(token: str, config: TokenConfig, *, now: float) -> Claims:
    """Check signature, algorithm, issuer, audience and expiry; return the claims.

    Raises :class:`TokenError` (message without the token) if anything is wrong.
    """
    try:
        payload = jwt.decode(
            token, config.verify_key, algorithms=[config.algorithm],
            issuer=config.issuer, audience=config.audience,
            # time claims are checked below against ``now`` (PyJWT would read the real clock)
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["sub", "exp"],
                     "verify_iss": config.issuer is not None,
                     "verify_aud": config.audience is not None},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"token rejected: {exc}") from exc
    except (ValueError, TypeError) as exc:  # malformed keys or input
        raise TokenError(f"token rejected: {type(exc).__name__}") from exc
    sub, exp = payload.get("sub"), payload.get("exp")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS or not sub.isprintable():
        # the user id is logged and used as a Redis key: printable, bounded
        raise TokenError(f"token claim 'sub' must be a non-empty printable string of at most "
                         f"{MAX_SUB_CHARS} characters")
    exp = _time_claim(payload, "exp")
    if exp is None:
        raise TokenError("token claim 'exp' must be a number")
    if exp + config.leeway_s <= now:
        raise TokenExpired(f"token of user {sub!r} expired at {int(exp)}")
    nbf = _time_claim(payload, "nbf")
    if nbf is not None and nbf > now + config.leeway_s:
        raise TokenError(f"token of user {sub!r} not valid before {int(nbf)}")
    wallets = _strings(payload, "wallets")
    for wallet in wallets:
        if _WALLET.fullmatch(wallet) is None:
            raise TokenError(f"token claim 'wallets' holds a non-address {wallet[:50]!r}")
    # an exact `user:0xab…` grant in lower case is the EIP-55 topic records are routed to
    topics = tuple(normalise_topic(t) for t in _strings(payload, "topics"))
    return Claims(user=sub, wallets=wallets, topics=topics, expires_at=int(exp))


class TokenExpired(TokenError):
    """The token was valid but its ``exp`` has passed."""
