"""Find the FAT boot partition inside a disk image, from its MBR or GPT partition table.

Raspberry Pi OS images use an MBR with the FAT32 boot partition first (type 0x0C); GPT images
(as rpi-image-gen can make) mark it as a Microsoft basic data or EFI system partition. We read
the table ourselves (no root, no loop device, no ``losetup``) and confirm the partition really
starts with a FAT boot sector before anything is written to it. Sectors are 512 bytes, as in
every Raspberry Pi OS image.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from firmware.errors import InputError

SECTOR = 512
_FAT_MBR_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
_GPT_FAT_TYPES = {
    uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),  # Microsoft basic data
    uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),  # EFI system partition
}
_COMPRESSED = {
    b"\xfd7zXZ\x00": "xz (decompress it first: xz -dk IMAGE.img.xz)",
    b"\x1f\x8b": "gzip (decompress it first: gunzip -k IMAGE.img.gz)",
    b"PK\x03\x04": "zip (unzip it first)",
    b"\x28\xb5\x2f\xfd": "zstd (decompress it first: zstd -d IMAGE.img.zst)",
}


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as Linux names it (0: the image is a bare FAT filesystem)
    offset: int  # bytes from the start of the image
    size: int  # bytes
    scheme: str  # "mbr", "gpt" or "none"


def _looks_fat(sector: bytes) -> bool:
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        return False
    jump_ok = sector[0] == 0xEB or sector[0] == 0xE9
    return jump_ok and (
        sector[54:59] == b"FAT12"
        or sector[54:59] == b"FAT16"
        or sector[82:87] == b"FAT32"
        or sector[54:57] == b"FAT"
    )


def _read(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _gpt(f: BinaryIO, image: Path) -> list[Partition]:
    header = _read(f, SECTOR, SECTOR)
    if header[:8] != b"EFI PART":
        raise InputError(f"{image}: protective MBR but no GPT header", hint="the image is damaged")
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    table = _read(f, entries_lba * SECTOR, count * entry_size)
    out = []
    for i in range(count):
        entry = table[i * entry_size : (i + 1) * entry_size]
        if len(entry) < 48:
            break
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if type_guid in _GPT_FAT_TYPES:
            out.append(Partition(i + 1, first * SECTOR, (last - first + 1) * SECTOR, "gpt"))
    return out


def find_boot_partition(image: Path) -> Partition:
    """The first FAT partition of ``image`` (raises InputError when there is none)."""
    try:
        size = image.stat().st_size
        with image.open("rb") as f:
            mbr = _read(f, 0, SECTOR)
            for magic, what in _COMPRESSED.items():
                if mbr.startswith(magic):
                    raise InputError(
                        f"{image}: this is a {what.split(' ')[0]} archive, not a disk image",
                        hint=what.split("(", 1)[1].rstrip(")"),
                    )
            if len(mbr) < SECTOR:
                raise InputError(
                    f"{image}: too small to be a disk image ({size} bytes)",
                    hint="pass the flashed .img file or the mounted boot partition",
                )
            if _looks_fat(mbr):
                return Partition(0, 0, size, "none")
            if mbr[510:512] != b"\x55\xaa":
                raise InputError(
                    f"{image}: no partition table (no MBR signature)",
                    hint="pass a Raspberry Pi OS .img file or a mounted boot partition",
                )
            candidates: list[Partition] = []
            for n in range(4):
                ptype, start, count = struct.unpack_from("<4xB3xII", mbr, 446 + 16 * n)
                if ptype == 0xEE:
                    candidates = _gpt(f, image)
                    break
                if ptype in _FAT_MBR_TYPES and count:
                    candidates.append(Partition(n + 1, start * SECTOR, count * SECTOR, "mbr"))
            for part in candidates:
                if part.offset + part.size > size:
                    raise InputError(
                        f"{image}: partition {part.number} runs past the end of the file "
                        "(truncated image?)",
                        hint="download and decompress the image again",
                    )
                if _looks_fat(_read(f, part.offset, SECTOR)):
                    return part
    except OSError as exc:
        raise InputError(
            f"{image}: cannot read ({exc.strerror})", hint="check the path and permissions"
        ) from None
    raise InputError(
        f"{image}: no FAT boot partition found in its partition table",
        hint="pass a flashed Raspberry Pi OS image (its first partition is the FAT32 boot one)",
    )
