"""Tether's HPACK result reuse (protocols/http2.py _Encoder/_Decoder) against hpack itself:
whatever sequence of header lists, table-size changes and evictions, the cached coder's output
decodes to what was sent, and the cached decoder reads what a plain encoder wrote. Sans-I/O."""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocols.http2 import _Decoder, _Encoder

NAMES = [b":status", b"content-type", b"content-length", b"server", b"date", b"x-a", b"x-b", b"set-cookie"]
VALUES = [b"200", b"404", b"text/plain", b"tether", b"1", b"22", b"v" * 300, b"w" * 1500, b""]

header = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES))
header_list = st.lists(header, min_size=1, max_size=6)
# Each step: a header list to code, sometimes preceded by a new table size (SETTINGS).
steps = st.lists(st.tuples(header_list, st.one_of(st.none(), st.sampled_from([0, 64, 512, 4096]))),
                 min_size=1, max_size=60)


def _repeat(sequence: list) -> list:
    """Repeat every list once right after itself, so that the cache is exercised."""
    out = []
    for item in sequence:
        out += [item, item]
    return out


@settings(max_examples=300, deadline=None)
@given(steps)
def test_cached_encoder_output_decodes_to_the_headers_sent(sequence: list) -> None:
    encoder, decoder = _Encoder(), hpack.Decoder()
    for headers, table_size in _repeat(sequence):
        if table_size is not None:
            encoder.header_table_size = table_size
            decoder.max_allowed_table_size = max(table_size, 4096)
        block = encoder.encode(headers)
        assert [tuple(h) for h in decoder.decode(block, raw=True)] == headers


@settings(max_examples=300, deadline=None)
@given(steps)
def test_cached_decoder_reads_what_a_plain_encoder_wrote(sequence: list) -> None:
    encoder, decoder = hpack.Encoder(), _Decoder()
    decoder.max_allowed_table_size = 4096
    for headers, table_size in _repeat(sequence):
        if table_size is not None:
            encoder.header_table_size = table_size
        block = encoder.encode(headers)
        assert [tuple(h) for h in decoder.decode(block, raw=True)] == headers


def test_a_repeated_block_is_served_from_the_cache_only_while_the_table_is_unchanged() -> None:
    encoder = _Encoder()
    headers = [(b":status", b"200"), (b"x-a", b"1")]
    first = encoder.encode(headers)  # adds x-a: 1 to the table
    second = encoder.encode(headers)  # indexed now, changes nothing: cached
    assert second != first and encoder.encode(headers) is second
    encoder.encode([(b"x-b", b"22")])  # a table change invalidates it
    third = encoder.encode(headers)
    assert third is not second
    assert hpack.Decoder().decode(first + b"", raw=True)  # (still a valid block on its own)
