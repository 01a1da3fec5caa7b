"""Part sizing and body checksums of the S3 target (pure logic, no server)."""

from __future__ import annotations

import base64
import hashlib
import zlib

from akoshad.targets.s3.target import MAX_PARTS, body_checksum, part_size_for


def test_part_size_keeps_a_file_within_10000_parts() -> None:
    mib = 1024 * 1024
    assert part_size_for(0, 5 * mib) == 5 * mib
    assert part_size_for(40 * 1024 * mib, 5 * mib) == 5 * mib  # 40 GiB: 8,192 parts
    for size in (49 * 1024 * mib, 100 * 1024 * mib, 5 * 1024**4):
        part = part_size_for(size, 5 * mib)
        assert part % mib == 0 and part > 5 * mib
        gzip_bound = size + size // 100 + mib  # what gzip may produce of incompressible data
        assert -(-gzip_bound // part) <= MAX_PARTS


def test_body_checksums_are_what_s3_expects() -> None:
    data = b"akoshad" * 1000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert body_checksum("crc32", data) == crc
    assert body_checksum("md5", data) == md5
    assert body_checksum("crc32", b"") == "AAAAAA=="
