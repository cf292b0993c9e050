"""``provision bundle``: everything a Pi needs to install anoncam with no internet.

Layout of a bundle folder::

    wheels/                   anoncam's wheel, its dependencies for the Pi, and pip itself
    constraints-cp311.txt     pins for Raspberry Pi OS Bookworm (CPython 3.11, system numpy 1.24)
    constraints-cp313.txt     pins for Raspberry Pi OS Trixie (CPython 3.13, system numpy 2.2)
    models/                   centerface-opt.onnx, nanodet.onnx and their licences (hash-checked)
    manifest.json             what is inside, with the SHA-256 of every file

Why the numpy pins: on the Pi, picamera2 and its ``simplejpeg`` come from apt, built against
the system numpy. The service's venv is made with ``--system-site-packages`` to see them, and a
venv that pip-installs a numpy of another major version shadows the system one and breaks
``import picamera2`` ("numpy.dtype size changed", picamera2 issues #1088, #1170, #1211). So
the device install passes the constraints file for its Python: ``numpy<2`` on Bookworm, whose
python3-numpy is 1.24; ``numpy>=2,<3`` on Trixie, whose python3-numpy is 2.2. When the system
numpy satisfies anoncam (``numpy>=1.21.6``) pip installs none at all; the bundled wheel only
serves images without python3-numpy. pip is bundled too, so the install needs neither
``python3-venv``'s ensurepip nor network.

Downloads come only from the package index pip is configured for (PyPI), via ``pip download``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware import __version__
from firmware.errors import InputError, ModelError, OutputError, UsageError
from firmware.fsutil import sha256_file, write_atomic

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
MANIFEST = "manifest.json"
SCHEMA = "anoncam/bundle/1"


@dataclass(frozen=True)
class PiTarget:
    """A Raspberry Pi OS release anoncam installs on, by its CPython version."""

    python: str
    release: str
    glibc_minor: int  # glibc 2.x of the release: the newest manylinux tag its wheels may carry
    numpy: str  # requirement keeping the venv on the system numpy's major version

    @property
    def tag(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        return ["manylinux2014_aarch64"] + [
            f"manylinux_2_{m}_aarch64" for m in range(17, self.glibc_minor + 1)
        ]


PI_TARGETS: dict[str, PiTarget] = {
    "3.11": PiTarget("3.11", "Raspberry Pi OS Bookworm (Debian 12)", 36, "numpy<2"),
    "3.13": PiTarget("3.13", "Raspberry Pi OS Trixie (Debian 13)", 41, "numpy>=2,<3"),
}


def _say(progress: Progress | None, text: str) -> None:
    """Tell the user through the CLI's progress callback, or the log when there is none."""
    if progress is not None:
        progress(text)
    else:
        logger.info("%s", text)


def project_root() -> Path | None:
    """The source checkout anoncam runs from, if any (where the wheel is built from)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "anoncam"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _pip(args: Sequence[str], *, progress: Progress | None, what: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    logger.debug("running %s", " ".join(cmd))
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail, line][-8:]
            if line.startswith(("Collecting", "Saved", "Downloading", "File was already")):
                _say(progress, f"  {line.strip()}")
        code = proc.wait()
    if code != 0:
        raise OutputError(
            f"{what} failed (pip exit {code}): " + " / ".join(t for t in tail if t),
            hint="check access to PyPI (or your pip mirror) and that wheels exist for the target",
        )


def build_wheel(dest: Path, *, progress: Progress | None = None) -> Path:
    root = project_root()
    if root is None:
        raise UsageError(
            "cannot build the anoncam wheel: not running from a source checkout",
            hint="pass --wheel FILE with an anoncam wheel (python -m pip wheel --no-deps PATH)",
        )
    _say(progress, f"building the anoncam wheel from {root}")
    with tempfile.TemporaryDirectory(prefix="anoncam-wheel-") as tmp:
        _pip(
            ["wheel", "--no-deps", "-q", "-w", tmp, str(root)],
            progress=progress,
            what="building the anoncam wheel",
        )
        built = sorted(Path(tmp).glob("anoncam-*.whl"))
        if not built:
            raise OutputError(
                "pip built no anoncam wheel", hint="run 'pip wheel --no-deps .' to see why"
            )
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / built[0].name
        shutil.copy2(built[0], target)
    return target


def constraints_text(numpy_requirement: str, release: str) -> str:
    return (
        f"# {release}: keep the venv on the system numpy's major version; picamera2 and\n"
        "# simplejpeg from apt are built against it (picamera2 issues #1088, #1170, #1211).\n"
        f"{numpy_requirement}\n"
    )


def download_wheels(
    wheels: Path,
    anoncam_wheel: Path,
    constraints: Path,
    *,
    target: PiTarget | None,
    progress: Progress | None = None,
) -> None:
    """``pip download`` anoncam's dependencies (and pip) for ``target``, or this machine if None."""
    args = ["download", "--only-binary", ":all:", "-d", str(wheels), "-c", str(constraints)]
    if target is not None:
        for plat in target.platforms():
            args += ["--platform", plat]
        args += ["--python-version", target.python, "--implementation", "cp"]
    args += [str(anoncam_wheel), "pip"]
    where = f"{target.release}, CPython {target.python}, aarch64" if target else "this machine"
    _say(progress, f"downloading wheels for {where}")
    _pip(args, progress=progress, what=f"downloading wheels for {where}")


def bundle_model(
    models_dir: Path,
    *,
    model: Path | None,
    progress: Progress | None,
    name: str = "centerface",
) -> Path:
    """Put the verified model ``name`` (and its licence) into the bundle; fetch it if needed."""
    from firmware.models.fetch import fetch
    from firmware.models.manifest import CHECKOUT_MODELS, default_model_path, model_dir, spec
    from firmware.models.verify import verify

    model_spec = spec(name)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / model_spec.file
    candidate = model if model is not None else default_model_path(name)
    if candidate.is_file():
        verify(candidate, name)
        _say(progress, f"adding the verified model {candidate}")
        if candidate.resolve() != target.resolve():
            shutil.copy2(candidate, target)
    elif model is not None:
        raise ModelError(f"{model}: model file not found", hint="pass the path of a fetched model")
    else:
        _say(progress, f"fetching the model {name} ({model_spec.source_package})")
        fetched = fetch(dest_dir=models_dir, name=name)
        if fetched != target:
            shutil.move(str(fetched), target)
    verify(target, name)
    licence = model_dir() / model_spec.licence_file
    checkout_licence = CHECKOUT_MODELS / model_spec.licence_file
    for candidate_licence in (licence, checkout_licence):
        if candidate_licence.is_file():
            shutil.copy2(candidate_licence, models_dir / model_spec.licence_file)
            break
    return target


def seal(
    bundle: Path, *, pythons: Sequence[str], platform: str, model_file: str | None
) -> dict[str, Any]:
    """Write ``manifest.json`` listing every file with its SHA-256; return the manifest."""
    files = {}
    for p in sorted(bundle.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(bundle).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    wheels = sorted(f for f in files if f.startswith("wheels/anoncam-"))
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "anoncam_version": __version__,
        "anoncam_wheel": wheels[0].removeprefix("wheels/") if wheels else None,
        "pythons": list(pythons),
        "platform": platform,
        "model": f"models/{model_file}" if model_file else None,
        "files": files,
    }
    write_atomic(bundle / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), mode=0o644)
    return manifest


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / MANIFEST
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{bundle}: not an anoncam bundle ({MANIFEST} missing)",
            hint="make one with 'anoncam provision bundle -o DIR'",
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: unreadable bundle manifest ({exc})", hint="rebuild the bundle"
        ) from None
    if data.get("schema") != SCHEMA or not isinstance(data.get("files"), dict):
        raise InputError(
            f"{path}: not a {SCHEMA} manifest", hint="rebuild the bundle with this anoncam"
        )
    return data


def check_bundle(bundle: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Check every file of a bundle against its manifest; InputError names the first bad one."""
    manifest = read_manifest(bundle)
    for rel, info in manifest["files"].items():
        p = bundle / rel
        if not p.is_file():
            raise InputError(f"{bundle}: {rel} is missing", hint="rebuild or re-copy the bundle")
        if p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
            raise InputError(
                f"{bundle}: {rel} does not match the manifest (corrupt copy?)",
                hint="rebuild or re-copy the bundle",
            )
    if not any(rel.startswith("wheels/pip-") for rel in manifest["files"]):
        raise InputError(f"{bundle}: no pip wheel in the bundle", hint="rebuild the bundle")
    _say(progress, f"bundle {bundle} checked: {len(manifest['files'])} files")
    return manifest


def build_bundle(
    out_dir: Path,
    pythons: Sequence[str] = ("3.11", "3.13"),
    *,
    native: bool = False,
    anoncam_wheel: Path | None = None,
    model: Path | None = None,
    include_model: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build (or refresh) a bundle in ``out_dir``. ``native``: wheels for this machine instead of
    the Pi (for tests of the first-boot install); ``pythons`` must then be this interpreter's."""
    for py in pythons:
        if py not in PI_TARGETS:
            raise UsageError(
                f"--python {py}: unsupported", hint=f"choose from {', '.join(PI_TARGETS)}"
            )
    if native:
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if list(pythons) != [here]:
            raise UsageError(f"a native bundle is for this Python ({here}) only")
    wheels = out_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if anoncam_wheel is not None:
        if not anoncam_wheel.is_file():
            raise InputError(
                f"{anoncam_wheel}: no such wheel", hint="pass an existing anoncam wheel"
            )
        for old in wheels.glob("anoncam-*.whl"):
            old.unlink()
        wheel = wheels / anoncam_wheel.name
        shutil.copy2(anoncam_wheel, wheel)
    else:
        for old in wheels.glob("anoncam-*.whl"):
            old.unlink()
        wheel = build_wheel(wheels, progress=progress)
    for py in pythons:
        target = PI_TARGETS[py]
        constraints = out_dir / f"constraints-{target.tag}.txt"
        write_atomic(constraints, constraints_text(target.numpy, target.release).encode())
        download_wheels(
            wheels, wheel, constraints, target=None if native else target, progress=progress
        )
    model_file = None
    if include_model:
        model_file = bundle_model(out_dir / "models", model=model, progress=progress).name
        bundle_model(out_dir / "models", model=None, progress=progress, name="nanodet")
    manifest = seal(
        out_dir,
        pythons=pythons,
        platform="native" if native else "linux_aarch64",
        model_file=model_file,
    )
    total = sum(int(f["size"]) for f in manifest["files"].values())
    _say(
        progress, f"bundle ready in {out_dir}: {len(manifest['files'])} files, {total / 1e6:.0f} MB"
    )
    return manifest
