"""Where a RedisStore connects, read from a ``redis://`` or ``rediss://`` URL: parsed
and checked at the boundary, with the password kept out of every text shown."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

#: The environment variable a password comes from when the URL has none.
PASSWORD_ENV = "TRIACT_REDIS_PASSWORD"
DEFAULT_PREFIX = "triact:"
DEFAULT_TIMEOUT = 5.0
_OPTIONS = ("prefix", "timeout")
_ENCODE = "a password holding / ? # or @ must be percent-encoded"


@attrs.frozen(repr=False)
class RedisAddress:
    """A parsed store URL. :meth:`__repr__` and :attr:`shown` never hold the password."""

    host: str
    port: int
    db: int
    tls: bool
    prefix: str
    timeout: float
    username: str | None = None
    password: str | None = None

    @property
    def shown(self) -> str:
        """The URL without its password, fit for errors and logs."""
        scheme = "rediss" if self.tls else "redis"
        user = self.username or ""
        auth = f"{user}:***@" if self.password is not None else (f"{user}@" if user else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}/{self.db}"

    def __repr__(self) -> str:
        return f"RedisAddress({self.shown!r}, prefix={self.prefix!r})"


class RedisUrlError(ValueError):
    """A store URL that cannot be used; the message never holds its password."""


def parse_redis_url(
    url: str, *, prefix: str | None = None, environ: dict[str, str] | None = None
) -> RedisAddress:
    """``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&timeout=S]`` (``rediss://``
    for TLS). The password comes from the URL, else from TRIACT_REDIS_PASSWORD;
    ``prefix`` (if given) wins over the URL's. RedisUrlError says what is wrong."""
    if not isinstance(url, str):
        raise RedisUrlError(f"a Redis store URL must be a str, not {type(url).__name__}")
    shown = _hidden(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is no number or out of range
        # Not urllib's message: it quotes the port's text, which is part of the
        # password when the password holds an unencoded / ? or #.
        raise RedisUrlError(
            f"{shown}: the port must be a number from 0 to 65535 ({_ENCODE})"
        ) from None
    if parts.scheme not in ("redis", "rediss"):
        raise RedisUrlError(f"{shown}: a Redis store URL starts with redis:// or rediss://")
    if not parts.hostname:
        raise RedisUrlError(f"{shown}: no host; e.g. redis://127.0.0.1:6379/0")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    if "@" in parts.path or "@" in parts.fragment or any("@" in name for name in query):
        # The user part held an unencoded / ? or #: what follows it is a password's.
        raise RedisUrlError(f"{shown}: {_ENCODE}")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and path.isascii()):
        raise RedisUrlError(f"{shown}: the path is the database number, e.g. /0; not {path!r}")
    if parts.fragment:
        raise RedisUrlError(f"{shown}: a Redis store URL has no #fragment")
    unknown = sorted(set(query) - set(_OPTIONS))
    if "password" in unknown:
        raise RedisUrlError(
            f"{shown}: the password goes before the host (redis://:PASSWORD@HOST) or in "
            f"{PASSWORD_ENV}, not in a ?password= option"
        )
    if unknown:
        raise RedisUrlError(
            f"{shown}: unknown option {unknown[0]!r}; the options are {', '.join(_OPTIONS)}"
        )
    given_prefix = _single(query, "prefix", shown)
    if prefix is None:
        prefix = DEFAULT_PREFIX if given_prefix is None else given_prefix
    if not prefix or not prefix.isprintable() or len(prefix) > 100:
        raise RedisUrlError(
            f"{shown}: the key prefix must be 1 to 100 printable characters, not {prefix!r}"
        )
    timeout = DEFAULT_TIMEOUT
    timeout_text = _single(query, "timeout", shown)
    if timeout_text is not None:
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 3600:
            raise RedisUrlError(
                f"{shown}: timeout is the seconds a Redis call may take, "
                f"> 0 and <= 3600; not {timeout_text!r}"
            )
    password = unquote(parts.password) if parts.password is not None else None
    if password is None:
        password = (os.environ if environ is None else environ).get(PASSWORD_ENV) or None
    username = unquote(parts.username) if parts.username else None
    return RedisAddress(
        host=parts.hostname,
        port=6379 if port is None else port,
        db=int(path or 0),
        tls=parts.scheme == "rediss",
        prefix=prefix,
        timeout=timeout,
        username=username,
        password=password,
    )


def _single(query: dict[str, list[str]], name: str, shown: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise RedisUrlError(f"{shown}: option {name!r} is given {len(values)} times")
    return values[0]


def _hidden(url: str) -> str:
    """``url`` fit to show: whatever sits between ``//`` and the last ``@`` (user and
    password, even one holding an unencoded / ? or #) hidden, and without its query
    and fragment (whose values are not shown: a ``?password=`` among them)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "the Redis store URL"
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}://{rest.partition('?')[0].partition('#')[0]}"
