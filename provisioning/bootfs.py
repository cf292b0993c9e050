"""The boot partition we write to: a mounted folder, or a FAT partition inside an image file.

Inside an image file we use mtools (``mcopy -i IMAGE@@OFFSET``), which reads and writes the FAT
filesystem directly in the file: no root, no loop device, no mount. Both kinds offer the same
few operations, so the card writer and ``verify`` never know which one they have.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from firmware.errors import InputError, OutputError
from provisioning.partitions import Partition, find_boot_partition

#: Reports (bytes done, bytes total) while a folder is copied.
CopyProgress = Callable[[int, int], None]


class BootPartition(Protocol):
    description: str

    def read(self, rel: str) -> bytes | None: ...
    def write(self, rel: str, data: bytes) -> None: ...
    def remove(self, rel: str) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def put_tree(self, src: Path, rel: str, progress: CopyProgress | None = None) -> None: ...
    def get_tree(self, rel: str, dest: Path) -> bool: ...
    def free_bytes(self) -> int: ...
    def used_bytes(self, rel: str) -> int: ...


def _tree_files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


class DirectoryBoot:
    """A mounted boot partition (or any folder standing in for one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"mounted boot partition {root}"

    def _path(self, rel: str) -> Path:
        return self.root / rel.strip("/")

    def read(self, rel: str) -> bytes | None:
        try:
            return self._path(rel).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(
                f"{self._path(rel)}: cannot read ({exc.strerror})", hint="check the mount"
            ) from None

    def write(self, rel: str, data: bytes) -> None:
        p = self._path(rel)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".anoncam-tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        except OSError as exc:
            raise OutputError(
                f"{p}: cannot write ({exc.strerror})",
                hint="is the boot partition mounted read-write and not full?",
            ) from None

    def remove(self, rel: str) -> None:
        p = self._path(rel)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)

    def exists(self, rel: str) -> bool:
        return self._path(rel).exists()

    def put_tree(self, src: Path, rel: str, progress: CopyProgress | None = None) -> None:
        dest = self._path(rel)
        self.remove(rel)
        files = _tree_files(src)
        total, done = sum(f.stat().st_size for f in files), 0
        try:
            for f in files:
                target = dest / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                done += f.stat().st_size
                if progress:
                    progress(done, total)
            os.sync()
        except OSError as exc:
            raise OutputError(
                f"{dest}: copy failed ({exc.strerror})",
                hint="check free space on the boot partition",
            ) from None

    def get_tree(self, rel: str, dest: Path) -> bool:
        src = self._path(rel)
        if not src.is_dir():
            return False
        shutil.copytree(src, dest / Path(rel.strip("/")).name, dirs_exist_ok=True)
        return True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def used_bytes(self, rel: str) -> int:
        p = self._path(rel)
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in _tree_files(p)) if p.is_dir() else 0


_FREE = re.compile(r"([\d ]+) bytes free")
_TOTAL = re.compile(r"Total files listed:\s*\n\s*[\d ]+ files?\s+([\d ]+) bytes")


class ImageBoot:
    """The FAT boot partition inside a disk image file, written with mtools."""

    def __init__(self, image: Path, partition: Partition) -> None:
        self.image = image
        self.partition = partition
        self.spec = f"{image}@@{partition.offset}"
        where = (
            f"partition {partition.number} ({partition.scheme.upper()})"
            if partition.number
            else "FAT image"
        )
        self.description = f"{where} of {image} at byte {partition.offset}"
        if shutil.which("mcopy") is None:
            raise OutputError(
                "mtools is not installed (mcopy not found)",
                hint="install it: sudo apt-get install mtools",
            )

    def _run(
        self, *args: str, stdout: int | None = subprocess.PIPE
    ) -> subprocess.CompletedProcess[bytes]:
        # MTOOLS_SKIP_CHECK: images made by pi-gen have geometry values mtools would refuse.
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")
        return subprocess.run(
            [args[0], "-i", self.spec, *args[1:]],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )

    def _fail(self, what: str, proc: subprocess.CompletedProcess[bytes]) -> OutputError:
        err = proc.stderr.decode(errors="replace").strip()
        return OutputError(
            f"{self.image}: {what} failed: {err}",
            hint="check the image is not mounted elsewhere and has free space",
        )

    def read(self, rel: str) -> bytes | None:
        proc = self._run("mcopy", "-n", f"::/{rel.strip('/')}", "-")
        return proc.stdout if proc.returncode == 0 else None

    def write(self, rel: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="anoncam-boot-") as tmp:
            local = Path(tmp) / Path(rel).name
            local.write_bytes(data)
            proc = self._run("mcopy", "-o", "-D", "o", str(local), f"::/{rel.strip('/')}")
            if proc.returncode != 0:
                raise self._fail(f"writing {rel}", proc)

    def remove(self, rel: str) -> None:
        target = f"::/{rel.strip('/')}"
        if self._run("mdir", "-b", target).returncode != 0:
            return
        proc = self._run("mdeltree", target)
        if proc.returncode != 0:
            proc = self._run("mdel", target)
            if proc.returncode != 0:
                raise self._fail(f"removing {rel}", proc)

    def exists(self, rel: str) -> bool:
        return self._run("mdir", "-b", f"::/{rel.strip('/')}").returncode == 0

    def put_tree(self, src: Path, rel: str, progress: CopyProgress | None = None) -> None:
        base = rel.strip("/")
        self.remove(base)
        dirs = [Path(base)] + [
            Path(base) / d.relative_to(src) for d in sorted(src.rglob("*")) if d.is_dir()
        ]
        for d in dirs:
            proc = self._run("mmd", f"::/{d.as_posix()}")
            if proc.returncode != 0:
                raise self._fail(f"creating {d}", proc)
        files = _tree_files(src)
        total, done = sum(f.stat().st_size for f in files), 0
        for f in files:
            target = (Path(base) / f.relative_to(src)).as_posix()
            proc = self._run("mcopy", "-o", "-D", "o", str(f), f"::/{target}")
            if proc.returncode != 0:
                raise self._fail(f"copying {target}", proc)
            done += f.stat().st_size
            if progress:
                progress(done, total)

    def get_tree(self, rel: str, dest: Path) -> bool:
        if not self.exists(rel):
            return False
        dest.mkdir(parents=True, exist_ok=True)
        proc = self._run("mcopy", "-s", "-n", f"::/{rel.strip('/')}", str(dest))
        if proc.returncode != 0:
            raise self._fail(f"reading {rel}", proc)
        return True

    def free_bytes(self) -> int:
        proc = self._run("mdir", "::/")
        m = _FREE.findall(proc.stdout.decode(errors="replace"))
        if proc.returncode != 0 or not m:
            raise self._fail("reading free space", proc)
        return int(m[-1].replace(" ", ""))

    def used_bytes(self, rel: str) -> int:
        if not self.exists(rel):
            return 0
        proc = self._run("mdir", "-/", f"::/{rel.strip('/')}")
        m = _TOTAL.search(proc.stdout.decode(errors="replace"))
        return int(m.group(1).replace(" ", "")) if m else 0


def open_target(target: Path) -> BootPartition:
    """A mounted boot partition folder, or the boot partition inside an image file."""
    if target.is_dir():
        return DirectoryBoot(target)
    if not target.exists():
        raise InputError(
            f"{target}: no such image file or folder",
            hint="pass a flashed Raspberry Pi OS .img file or the mounted boot partition",
        )
    return ImageBoot(target, find_boot_partition(target))
