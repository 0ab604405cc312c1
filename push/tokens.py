"""Tokens: what a push node accepts, checked with PyJWT (no hand-made crypto).

A token is a JWT (RFC 7519) signed with HS256 and a shared secret, or RS256/ES256 with a key pair
(the app's backend keeps the private key, push nodes get the public key). Claims:

* ``sub`` (required): the user id;
* ``exp`` (required): expiry, unix seconds; ``iat`` optional;
* ``wallets``: checksummed addresses of the user; grants ``user:<wallet>`` for each;
* every token grants ``inbox:<sub>``, the user's own inbox of app messages;
* ``topics``: topic patterns the user may subscribe to: an exact topic, a prefix ending in ``*``
  (``contract:*``), or ``*`` for all — except ``tx:`` topics, granted only by a pattern that
  starts with ``tx:`` (``tx:*``, or ``tx:<hash>``): each one the watcher follows costs node
  requests (``[watch] max_tracked_txs``), so no broad pattern hands that out by accident;
* ``iss`` / ``aud``: checked when the node is configured with an issuer / audience.

Minting for an application's backend: :func:`mint` (``chainpush auth --issue`` uses it too)::

    from chainpush.push.tokens import mint
    token = mint("user-42", wallets=["0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"],
                 topics=["contract:DemoToken", "state:*"], ttl_s=3600, secret=SECRET)

Pure: never awaits, no I/O. The clock is a parameter so tests can move it.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chainpush.push.errors import ConfigError, MintError, TokenError, TopicNotAllowed
from chainpush.push.records import checksum, normalise_topic
from chainpush.push.wire import MAX_TOPIC_CHARS, valid_topic

#: secrets a node refuses outside dev mode: empty, short, or the well-known dev default.
DEV_SECRET = "chainpush-dev-secret-do-not-use-in-production"
MIN_SECRET_CHARS = 32
ALGORITHMS = ("HS256", "RS256", "ES256")
#: largest ``exp`` / ``nbf`` accepted (year 9999): beyond it, a time is a bug or an attack
MAX_NUMERIC_DATE = 253402300799
MAX_SUB_CHARS = 256
#: what :func:`mint` gives a token when neither ``ttl_s`` nor ``expires_at`` is passed
DEFAULT_TTL_S = 3600
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
        if kind == "inbox" and rest == self.user:  # the user's own inbox (docs/seams.md §3)
            return True
        explicit = kind == "tx"  # only a `tx:` pattern grants a tx: topic (module docstring)
        for pattern in self.topics:
            if explicit and not pattern.startswith("tx:"):
                continue
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


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def _valid_sub(sub: object) -> bool:
    return (isinstance(sub, str) and 0 < len(sub) <= MAX_SUB_CHARS and sub.isprintable())


def check_pattern(pattern: object) -> str:
    """A ``topics`` claim entry in its canonical spelling, or :class:`MintError`.

    ``*``; a prefix ending in ``*`` (``contract:*``, ``app:orders-*``); or an exact topic the
    wire protocol accepts (``user:0xab…`` becomes EIP-55, as :func:`verify` would make it)."""
    if not isinstance(pattern, str):
        raise MintError(f"topics must be strings, got {type(pattern).__name__}")
    if pattern == "*":
        return pattern
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        if ":" in prefix and len(pattern) <= MAX_TOPIC_CHARS and prefix.isprintable():
            return pattern
        raise MintError(f"topic pattern {pattern[:60]!r} must be '*' or '<kind>:<prefix>*' "
                        "such as 'contract:*'")
    if not valid_topic(pattern):
        raise MintError(f"topic {pattern[:60]!r} is not a topic a node serves (contract:<Name>, "
                        "state:<Name>, user:<0xaddress>, tx:<0xhash>, or a pattern ending in "
                        "'*'; "
                        "docs/protocol.md §4)")
    return normalise_topic(pattern)


def _key_algorithm(private_key: str) -> str:
    """RS256 or ES256 from a PEM private key (P-256 only for ES256, RFC 7518 §3.4)."""
    try:
        key = load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise MintError("private_key must be an unencrypted PEM private key (RSA or EC P-256): "
                        f"{type(exc).__name__}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise MintError("private_key must be an RSA key (RS256) or an EC P-256 key (ES256), got "
                    f"{type(key).__name__}")


def _signing(config: TokenConfig | None, secret: str | None, private_key: str | None,
             algorithm: str | None) -> tuple[str, str, TokenConfig | None]:
    """(algorithm, key, config) from exactly one kind of key material."""
    given = [name for name, value in (("config", config), ("secret", secret),
                                      ("private_key", private_key)) if value is not None]
    if len(given) != 1:
        raise MintError("pass exactly one of config=TokenConfig(...), secret=... or "
                        f"private_key=..., got {', '.join(given) or 'none'}")
    if config is not None:
        if algorithm is not None and algorithm != config.algorithm:
            raise MintError(f"algorithm={algorithm!r} contradicts config.algorithm "
                            f"{config.algorithm!r}")
        return config.algorithm, config.signing_key, config
    if secret is not None:
        if algorithm not in (None, "HS256"):
            raise MintError(f"a secret signs HS256 tokens, got algorithm={algorithm!r}")
        if len(secret) < MIN_SECRET_CHARS or secret == DEV_SECRET:
            raise MintError(f"secret must be the push nodes' [auth] secret: at least "
                            f"{MIN_SECRET_CHARS} characters and not the dev default (for the "
                            "dev secret pass config=TokenConfig(dev_mode=True))")
        return "HS256", secret, None
    assert private_key is not None
    inferred = _key_algorithm(private_key)
    if algorithm is not None and algorithm != inferred:
        raise MintError(f"algorithm={algorithm!r} does not match the private key ({inferred})")
    return inferred, private_key, None


def mint(
    user: str, *, wallets: Iterable[str] = (), topics: Iterable[str] = (),
    ttl_s: float | None = None, expires_at: int | None = None,
    config: TokenConfig | None = None, secret: str | None = None,
    private_key: str | None = None, algorithm: str | None = None,
    issuer: str | _Unset | None = _UNSET, audience: str | _Unset | None = _UNSET,
    now: float | None = None,
) -> str:
    """A token a push node accepts, for an application's backend (after its own login).

    * ``user``: the ``sub`` claim (non-empty, printable, at most 256 characters);
    * ``wallets``: addresses (``0x`` + 40 hex digits, any case; written EIP-55): each grants
      ``user:<wallet>``;
    * ``topics``: what else the token grants: exact topics, prefixes ending in ``*``, or ``*``;
    * ``ttl_s`` (seconds from ``now``) **or** ``expires_at`` (unix seconds); neither means
      :data:`DEFAULT_TTL_S`;
    * key material, exactly one of: ``config`` (the :class:`TokenConfig` the nodes use; for
      RS256/ES256 it needs ``private_key``), ``secret`` (HS256, the nodes' ``[auth] secret``), or
      ``private_key`` (PEM; RS256 or ES256 inferred from the key unless ``algorithm`` says);
    * ``issuer`` / ``audience``: the ``iss`` / ``aud`` claims; default: the config's, or
      ``"chainpush"`` and none (the nodes' defaults). ``None`` leaves the claim out;
    * ``now``: unix seconds (default: the system clock).

    Raises :class:`push.errors.MintError` (a ``ValueError``) naming the bad argument, or
    :class:`push.errors.ConfigError` when ``config`` holds no signing key.
    """
    clock = time.time() if now is None else now
    if not _valid_sub(user):
        raise MintError(f"user must be a non-empty printable string of at most {MAX_SUB_CHARS} "
                        f"characters, got {str(user)[:60]!r}")
    if isinstance(wallets, str) or isinstance(topics, str):
        raise MintError("wallets and topics must be lists of strings, not one string")
    checked_wallets: list[str] = []
    for wallet in wallets:
        if not isinstance(wallet, str) or _WALLET.fullmatch(wallet) is None:
            raise MintError(f"wallets: {str(wallet)[:60]!r} is not an address (0x + 40 hex "
                            "digits)")
        checked_wallets.append(checksum(wallet))
    checked_topics = [check_pattern(t) for t in topics]
    if ttl_s is not None and expires_at is not None:
        raise MintError("pass ttl_s or expires_at, not both")
    if expires_at is None:
        ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (
                math.isfinite(ttl) and ttl > 0):
            raise MintError(f"ttl_s must be a finite number of seconds > 0, got {ttl!r}")
        expires_at = int(clock + ttl)
    if isinstance(expires_at, bool) or not isinstance(expires_at, int) or not (
            clock < expires_at <= MAX_NUMERIC_DATE):
        raise MintError(f"expires_at must be an integer unix time after now ({int(clock)}) and "
                        f"at most {MAX_NUMERIC_DATE}, got {expires_at!r}")
    alg, key, cfg = _signing(config, secret, private_key, algorithm)
    payload: dict[str, Any] = {"sub": user, "wallets": checked_wallets,
                               "topics": checked_topics, "exp": expires_at, "iat": int(clock)}
    iss = (cfg.issuer if cfg is not None else "chainpush") if issuer is _UNSET else issuer
    aud = (cfg.audience if cfg is not None else None) if audience is _UNSET else audience
    for name, value in (("iss", iss), ("aud", aud)):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise MintError(f"{'issuer' if name == 'iss' else 'audience'} must be a "
                                f"non-empty string or None, got {value!r}")
            payload[name] = value
    return jwt.encode(payload, key, algorithm=alg)
