"""The token file and the Authorization header (``triact.transport.BearerTokens``):
every way a file or a header is refused, and that no message shows a token."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from triact.transport import BearerTokens, TokenFileError

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
SECRET = "s3cret-s3cret-s3cret-XYZ"


def test_a_file_with_comments_blank_lines_and_several_tokens_per_principal() -> None:
    tokens = BearerTokens.parse(
        f"# who may use this server\n\n  alice {ALICE}\n\tbob\t{BOB}  \n"
        f"   # rotating alice's token:\nalice {SECRET}\n"
    )
    assert tokens.principals == {"alice", "bob"}
    assert tokens.principal_of(ALICE) == "alice"
    assert tokens.principal_of(SECRET) == "alice"
    assert tokens.principal_of(BOB) == "bob"
    assert tokens.principal_of(ALICE + "x") is None
    assert tokens.principal_of("") is None
    assert SECRET not in repr(tokens)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            f"alice {SECRET} extra\n",
            "line 1: expected 'PRINCIPAL TOKEN' (two fields separated by spaces), found 3 fields",
        ),
        (
            f"# c\n\n{SECRET}\n",
            "line 3: expected 'PRINCIPAL TOKEN' (two fields separated by spaces), found 1 field",
        ),
        (f"al ice {SECRET}\n", "line 1: expected 'PRINCIPAL TOKEN'"),
        (f"alice {SECRET} # a comment after the token\n", "found 8 fields"),
        (f"al/ice {SECRET}\n", "line 1: the principal must be 1 to 128 of the characters"),
        (f"{'a' * 129} {SECRET}\n", "line 1: the principal must be 1 to 128"),
        (
            'alice s3cret-s3cret"s3cret-XYZ\n',
            "line 1: the token holds characters a bearer token cannot carry",
        ),
        (f"alice {SECRET[:15]}\n", "line 1: the token is shorter than 16 characters"),
        (f"alice {SECRET}\nbob {BOB}\nbob {SECRET}\n", "line 3: the same token as on line 1"),
        (f"alice {SECRET}\nalice {SECRET}\n", "line 2: the same token as on line 1"),
        ("", "holds no tokens"),
        ("# only comments\n\n   \n", "holds no tokens"),
    ],
)
def test_a_malformed_file_names_the_line_and_never_the_token(text: str, problem: str) -> None:
    with pytest.raises(TokenFileError) as refused:
        BearerTokens.parse(text, source="tokens.txt")
    message = str(refused.value)
    assert message.startswith("tokens.txt")
    assert problem in message
    for token in (SECRET, SECRET[:15], BOB, "s3cret-s3cret"):
        assert token not in message


def test_a_token_file_is_read_from_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice {ALICE}\n")
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="triact.transport"):
        assert BearerTokens.read(path).principal_of(ALICE) == "alice"
    assert not caplog.records
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="triact.transport"):
        BearerTokens.read(path)
    assert "readable by others" in caplog.text


def test_a_missing_or_binary_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"cannot read the token file .*missing.*No such file"):
        BearerTokens.read(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(f"alice {ALICE}\nbob \xff{SECRET}\n".encode("latin-1"))
    with pytest.raises(TokenFileError) as refused:
        BearerTokens.read(binary)
    assert "line 2: not UTF-8 text" in str(refused.value)
    assert SECRET not in str(refused.value)
    with pytest.raises(TokenFileError, match="cannot read"):
        BearerTokens.read(tmp_path)  # a directory


def test_pairs_are_checked_as_lines_are() -> None:
    assert BearerTokens.of([("alice", ALICE)]).principal_of(ALICE) == "alice"
    with pytest.raises(TokenFileError, match="shorter than 16"):
        BearerTokens.of([("alice", "short")])
    with pytest.raises(TokenFileError, match="no tokens"):
        BearerTokens.of([])


@pytest.mark.parametrize(
    ("header", "status", "challenge"),
    [
        (None, 401, b'Bearer realm="triact"'),
        (b"Basic YWxpY2U6cGFzcw==", 401, b'Bearer realm="triact"'),
        (b"Bearer", 400, b'Bearer realm="triact", error="invalid_request"'),
        (b"Bearer two words", 400, b'Bearer realm="triact", error="invalid_request"'),
        (b"Bearer " + BOB.encode() + b"x", 401, b'Bearer realm="triact", error="invalid_token"'),
    ],
)
def test_a_request_without_a_valid_bearer_token_is_refused(
    header: bytes | None, status: int, challenge: bytes
) -> None:
    from triact.transport._auth import Unauthorized

    tokens = BearerTokens.parse(f"alice {ALICE}\n")
    with pytest.raises(Unauthorized) as refused:
        tokens.authenticate(header)
    assert refused.value.status == status
    assert refused.value.challenge.startswith(challenge)
    assert BOB not in refused.value.message


def test_the_scheme_is_case_insensitive_and_spaces_around_the_token_are_allowed() -> None:
    tokens = BearerTokens.parse(f"alice {ALICE}\n")
    assert tokens.authenticate(f"Bearer {ALICE}".encode()) == "alice"
    assert tokens.authenticate(f"bearer   {ALICE} ".encode()) == "alice"
