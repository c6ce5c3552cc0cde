"""What a rosbag2's storage lets us check: MCAP chunk CRCs (written and verified), sqlite integrity.

rosbags' MCAP writer leaves every chunk's ``uncompressed_crc`` at 0 ("not computed"), so a reader
cannot tell a damaged chunk from a good one. :func:`seal_mcap_crcs` fills them in after the
writer closed (our recorder and ``kitti to-bag`` call it); rosbags' reader then checks them and
raises ``ReaderError("Chunk checksum mismatch.")`` on a damaged chunk, which ``replay`` reports.
Record layout: the MCAP specification (https://mcap.dev/spec, Chunk record: message start/end
time, uncompressed size, uncompressed CRC32, compression, records).
"""
from __future__ import annotations

import sqlite3
from binascii import crc32
from pathlib import Path

__all__ = ["MCAP_MAGIC", "seal_bag", "seal_mcap_crcs", "sqlite_problems"]

MCAP_MAGIC = b"\x89MCAP0\r\n"
_CHUNK, _FOOTER = 0x06, 0x02


def seal_mcap_crcs(path: str | Path) -> int:
    """Write the CRC32 of every chunk whose CRC is 0 (in place); returns how many were sealed.

    :raises ValueError: not an MCAP file, or a record running past the end of the file.
    """
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    path, sealed = Path(path), 0
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        if fh.read(8) != MCAP_MAGIC:
            raise ValueError(f"{path}: not an MCAP file")
        pos = 8
        while pos + 9 <= size:
            fh.seek(pos)
            head = fh.read(9)
            op, length = head[0], int.from_bytes(head[1:9], "little")
            if pos + 9 + length > size:
                raise ValueError(f"{path}: record at byte {pos} runs past the end of the file")
            if op == _FOOTER:
                break
            if op == _CHUNK:
                body = fh.read(length)
                usize, crc = int.from_bytes(body[16:24], "little"), int.from_bytes(body[24:28], "little")
                clen = int.from_bytes(body[28:32], "little")
                compression = body[32:32 + clen].decode()
                csize = int.from_bytes(body[32 + clen:40 + clen], "little")
                if crc == 0:
                    raw = DECOMPRESSORS[compression](body[40 + clen:40 + clen + csize], usize)
                    fh.seek(pos + 9 + 24)
                    fh.write(crc32(raw).to_bytes(4, "little"))
                    sealed += 1
            pos += 9 + length
    return sealed


def seal_bag(bag: str | Path) -> int:
    """:func:`seal_mcap_crcs` on every ``.mcap`` file of a bag folder (sqlite3 bags: nothing to do)."""
    return sum(seal_mcap_crcs(p) for p in sorted(Path(bag).glob("*.mcap")))


def sqlite_problems(path: str | Path, limit: int = 5) -> list[str]:
    """``PRAGMA integrity_check`` of a ``.db3`` (read only); empty when it is intact."""
    con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        rows = [r[0] for r in con.execute(f"PRAGMA integrity_check({int(limit)})")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        con.close()
    return [] if rows == ["ok"] else rows
