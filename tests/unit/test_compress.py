"""GzipSegments: /metrics gzipped from pieces, compressing only the segments that changed.

Every body is checked by decoders other than ours: Python's gzip module (which checks the CRC and
the length), zlib in gzip mode, and Debian's gzip binary.
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.metrics.compress import SEGMENT_MAX, SEGMENT_MIN, GzipSegments


def lines(prefix: str, count: int) -> bytes:
    """Text like a target's sample lines."""
    return "".join(
        f'posture_violations{{aws_account_id="{prefix}",control="LAMBDA.{i % 40}"}} {i}.0\n'
        for i in range(count)
    ).encode()


def decoded(body: bytes, binary: bool = True) -> bytes:
    """The body as three decoders read it (two without `binary`); they must agree."""
    by_module = gzip.decompress(body)
    by_zlib = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    assert by_zlib == by_module
    program = shutil.which("gzip") if binary else None
    if program is not None:
        done = subprocess.run([program, "-dc"], input=body, capture_output=True, check=True)
        assert done.stdout == by_module
    return by_module


def pieces_of_a_scrape(targets: int = 120) -> list[bytes]:
    header = b"# HELP posture_violations Violations.\n# TYPE posture_violations gauge\n"
    return [header, *(lines(f"{i:012d}", 30 + i % 7) for i in range(targets)), b"# EOF\n"]


def test_the_body_is_one_gzip_member_of_the_joined_pieces() -> None:
    pieces = pieces_of_a_scrape()
    body = GzipSegments(3).compress(pieces)
    assert decoded(body) == b"".join(pieces)
    # one member: a reader that stops after the first member (as curl and browsers do) sees all
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(body) == b"".join(pieces)
    assert reader.eof and reader.unused_data == b""
    assert len(body) < len(b"".join(pieces)) / 10  # still compressed


def test_unchanged_pieces_are_not_compressed_again() -> None:
    pieces = pieces_of_a_scrape()
    gz = GzipSegments(3)
    first = gz.compress(pieces)
    segments = gz.compressed
    assert segments > 3  # the body was cut (~330 KB: SEGMENT_MIN is 16 KB)
    assert gz.compress(list(pieces)) == first
    assert gz.compressed == segments
    assert gz.reused == segments


def test_one_changed_piece_recompresses_a_segment_or_two_not_the_rest() -> None:
    pieces = pieces_of_a_scrape()
    gz = GzipSegments(3)
    gz.compress(pieces)
    segments = gz.compressed
    changed = list(pieces)
    changed[60] = lines("changed", 45)  # another object, another length
    body = gz.compress(changed)
    assert decoded(body) == b"".join(changed)
    assert 1 <= gz.compressed - segments <= 3
    # equal bytes in a new object are compressed again (identity is the key), and still right
    copied = [bytes(bytearray(p)) for p in changed]
    assert decoded(gz.compress(copied)) == b"".join(changed)


def test_a_piece_seen_last_time_at_another_place_is_placed_right() -> None:
    pieces = pieces_of_a_scrape()
    gz = GzipSegments(3)
    gz.compress(pieces)
    reordered = [pieces[0], *reversed(pieces[1:-1]), pieces[-1]]
    assert decoded(gz.compress(reordered)) == b"".join(reordered)
    fewer = pieces[:10] + pieces[50:]  # targets gone
    assert decoded(gz.compress(fewer)) == b"".join(fewer)


def test_segments_are_bounded() -> None:
    huge = lines("huge", 20_000)  # one piece over SEGMENT_MAX: a segment of its own
    small = [lines(f"{i}", 3) for i in range(2_000)]  # ~300 KB of small pieces
    gz = GzipSegments(1)
    assert decoded(gz.compress([huge, *small])) == huge + b"".join(small)
    total = len(huge) + sum(map(len, small))
    assert gz.compressed >= (total - len(huge)) // SEGMENT_MAX + 1
    assert gz.compressed <= (total - len(huge)) // SEGMENT_MIN + 2


@pytest.mark.parametrize("pieces", [[], [b""], [b"", b"x", b""], [b"a" * 3]])
def test_empty_and_tiny_bodies(pieces: list[bytes]) -> None:
    assert decoded(GzipSegments(3).compress(pieces)) == b"".join(pieces)


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=9))
def test_any_sequence_of_scrapes_decodes_to_its_text(rng: random.Random, level: int) -> None:
    """Scrapes whose pieces are kept, replaced, dropped, added and moved at random."""
    gz = GzipSegments(level)
    pool = [lines(f"{i}", rng.randint(0, 400)) for i in range(60)]
    pieces = rng.sample(pool, 40)
    for _ in range(6):
        assert decoded(gz.compress(pieces), binary=False) == b"".join(pieces)
        pieces = list(pieces)
        for _ in range(rng.randint(0, 5)):
            action = rng.randrange(4)
            at = rng.randrange(len(pieces) + 1)
            if action == 0 and pieces:
                pieces[at % len(pieces)] = lines(f"new{rng.random()}", rng.randint(0, 400))
            elif action == 1 and pieces:
                del pieces[at % len(pieces)]
            elif action == 2:
                pieces.insert(at, rng.choice(pool))
            else:
                pieces.insert(at, rng.randbytes(rng.randint(0, 3000)))
