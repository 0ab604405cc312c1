"""Booleans from the environment and from TOML, parsed strictly, in one place.

An environment variable is text: ``1``/``true``/``yes``/``on`` mean true and
``0``/``false``/``no``/``off`` mean false (any case, surrounding blanks ignored); unset or empty
means "not given" (``None``), so the caller's default applies. Anything else is an error naming
the variable: a typo such as ``CHAINPUSH_DEV=flase`` must stop the program, not pick a side
(``CHAINPUSH_DEV=false`` once turned dev mode *on*, because only ``""`` and ``"0"`` counted as
false).

A TOML value must be a real TOML boolean (``dev_mode = true``). A quoted ``"false"`` is refused
with a message saying to drop the quotes, rather than parsed: TOML has booleans, and accepting
strings for some keys would make the file's meaning depend on which key it is.

Pure: the caller passes the environment mapping and translates :class:`InvalidBoolean` into its
package's ``ConfigError`` (both are ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Mapping

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class InvalidBoolean(ValueError):
    """A value that is not one of the accepted boolean spellings; the message names its source."""


def parse_bool(text: str, *, name: str) -> bool:
    """``text`` as a boolean; ``name`` (a variable or key) is named in the error."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidBoolean(
        f"{name} must be one of 1/true/yes/on or 0/false/no/off, got {text[:40]!r}"
    )


def env_bool(env: Mapping[str, str], name: str) -> bool | None:
    """The environment variable ``name`` as a boolean, or ``None`` when unset or empty."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return parse_bool(raw, name=f"environment variable {name}")


def toml_bool(value: object, *, key: str) -> bool:
    """A TOML value that must be a boolean (``key`` such as ``[auth] dev_mode``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        raise InvalidBoolean(
            f"{key} must be a TOML boolean (true or false, without quotes), got the string "
            f"{value[:40]!r}"
        )
    raise InvalidBoolean(f"{key} must be a TOML boolean (true or false), got {value!r:.40}")
