"""Bearer tokens for the HTTP transport: the token file, and who a request's
``Authorization`` header says its caller is.

A token file has one ``PRINCIPAL TOKEN`` pair a line; blank lines and lines whose
first non-blank character is ``#`` are skipped. A principal may have several tokens
(to rotate one: add the new token, move the clients over, remove the old one); a token
names one principal, so the same token twice is an error, wherever it appears. Tokens
are kept only as keyed digests (HMAC-SHA256 under a random key of the process), and a
presented token is found by its digest: what the time of that lookup depends on is a
digest the caller cannot compute, so it tells the caller nothing (no byte of a token is
ever compared with a caller's). No message ever shows a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger("triact.transport")

#: What a principal may be named: it is stored with the sessions it creates and
#: written to logs, so printable, without spaces, and short.
_PRINCIPAL = re.compile(r"[A-Za-z0-9._@:+-]{1,128}")
#: RFC 6750's b64token: what a bearer token may hold to travel in the header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Shortest token accepted, in characters: a guessable token is no authentication.
MIN_TOKEN_CHARS = 16
_EXAMPLE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: The realm named in every challenge.
REALM = "triact"


class TokenFileError(ValueError):
    """A token file cannot be used: unreadable, empty of tokens, or a line that is
    not ``PRINCIPAL TOKEN`` (the message names the line by its number, never the
    token on it)."""


class Unauthorized(Exception):
    """A request the bearer tokens refuse: its HTTP ``status`` (401, or 400 for a
    malformed header), the ``WWW-Authenticate`` challenge to send and a message for
    the JSON-RPC error body."""

    def __init__(self, status: int, challenge: bytes, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.challenge = challenge
        self.message = message


class BearerTokens:
    """The tokens a server accepts, each naming its principal. Make one with
    :meth:`read` (a token file) or :meth:`of` (pairs); :meth:`authenticate` gives the
    principal of a request's ``Authorization`` header."""

    __slots__ = ("_by_digest", "_key")

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        """From ``(principal, token)`` pairs, taken as they are (:meth:`of` checks
        them as a file's lines)."""
        self._key = secrets.token_bytes(32)
        # The keyed digest of each token -> its principal; never the token itself.
        self._by_digest = {self._digest(token): principal for principal, token in pairs}
        if not self._by_digest:
            raise TokenFileError("no tokens: give at least one 'PRINCIPAL TOKEN' line")

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> BearerTokens:
        """From ``(principal, token)`` pairs, checked as a token file's lines are."""
        lines = [f"{principal} {token}" for principal, token in pairs]
        return cls.parse("\n".join(lines), source="the tokens given")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> BearerTokens:
        """Read a token file (see the module's description); TokenFileError if it
        cannot be used. A file that others may read is used, with a warning."""
        path = Path(path)
        try:
            raw = path.read_bytes()
            mode = path.stat().st_mode
        except OSError as exc:
            raise TokenFileError(
                f"cannot read the token file {str(path)!r}: {exc.strerror or exc}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("the token file %s is readable by others; chmod 600 it", path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise TokenFileError(f"token file {str(path)!r}, line {line}: not UTF-8 text") from None
        return cls.parse(text, source=f"token file {str(path)!r}")

    @classmethod
    def parse(cls, text: str, *, source: str = "token file") -> BearerTokens:
        """The tokens of a token file's text; TokenFileError naming ``source`` and the
        line if one is malformed."""
        pairs: list[tuple[str, str]] = []
        seen: dict[bytes, int] = {}  # SHA-256 of a token -> the line it was on
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            where = f"{source}, line {number}"
            fields = stripped.split()
            if len(fields) != 2:
                raise TokenFileError(
                    f"{where}: expected 'PRINCIPAL TOKEN' (two fields separated by "
                    f"spaces), found {len(fields)} field{'s' if len(fields) != 1 else ''}"
                )
            principal, token = fields
            if not _PRINCIPAL.fullmatch(principal):
                raise TokenFileError(
                    f"{where}: the principal must be 1 to 128 of the characters "
                    "A-Z a-z 0-9 . _ @ : + -"
                )
            if not _TOKEN.fullmatch(token):
                raise TokenFileError(
                    f"{where}: the token holds characters a bearer token cannot carry "
                    "(use A-Z a-z 0-9 - . _ ~ + /, e.g. the output of " + _EXAMPLE + ")"
                )
            if len(token) < MIN_TOKEN_CHARS:
                raise TokenFileError(
                    f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters; "
                    f"make a long random one, e.g. with {_EXAMPLE}"
                )
            digest = hashlib.sha256(token.encode()).digest()
            if digest in seen:
                raise TokenFileError(
                    f"{where}: the same token as on line {seen[digest]}; a token names "
                    "one principal, so give each line a token of its own"
                )
            seen[digest] = number
            pairs.append((principal, token))
        if not pairs:
            raise TokenFileError(
                f"{source} holds no tokens: give at least one 'PRINCIPAL TOKEN' line"
            )
        return cls(pairs)

    @property
    def principals(self) -> frozenset[str]:
        """The principals that have a token."""
        return frozenset(self._by_digest.values())

    def principal_of(self, token: str) -> str | None:
        """The principal whose token ``token`` is, or None.

        Found by the token's keyed digest: the lookup's time depends on that digest
        only, which the caller cannot compute without the process's key, so it learns
        nothing of the stored tokens from it; and it costs the same for a file of 2
        tokens or 10,000."""
        return self._by_digest.get(self._digest(token))

    def authenticate(self, authorization: bytes | None) -> str:
        """The principal of a request whose ``Authorization`` header is
        ``authorization`` (None: no such header); :class:`Unauthorized` for a request
        without a valid bearer token."""
        if authorization is None:
            raise Unauthorized(
                401,
                f'Bearer realm="{REALM}"'.encode(),
                "Unauthorized: send 'Authorization: Bearer TOKEN' with a token of this server",
            )
        text = authorization.decode("latin-1").strip()
        scheme, _, credentials = text.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized(
                401,
                f'Bearer realm="{REALM}"'.encode(),
                "Unauthorized: this server takes bearer tokens only "
                "('Authorization: Bearer TOKEN')",
            )
        token = credentials.strip()
        if not _TOKEN.fullmatch(token):
            raise Unauthorized(
                400,
                f'Bearer realm="{REALM}", error="invalid_request", '
                'error_description="malformed bearer token"'.encode(),
                "Bad Request: the Authorization header holds no well-formed bearer token",
            )
        principal = self.principal_of(token)
        if principal is None:
            raise Unauthorized(
                401,
                f'Bearer realm="{REALM}", error="invalid_token", '
                'error_description="unknown token"'.encode(),
                "Unauthorized: the bearer token is not one of this server's",
            )
        return principal

    def __repr__(self) -> str:
        tokens, principals = len(self._by_digest), len(self.principals)
        return f"<BearerTokens: {tokens} token(s), {principals} principal(s)>"
