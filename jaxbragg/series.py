"""``jaxbragg-series``: a rotation series or a set of randomly oriented shots, one file per image.

    jaxbragg-series rotation --frames N --osc DEG [--start-phi DEG] --prefix NAME [options] -- FLAGS
    jaxbragg-series shots --count N [--seed S] --prefix NAME [options] -- FLAGS

``FLAGS`` are the nanoBragg flags of the single-image ``jaxbragg`` command (parsed and resolved by the same
code, :mod:`jaxbragg.cli`). Frame ``k`` (0-based) of a rotation series covers the spindle window
``[start + k osc, start + (k + 1) osc)``, sampled by ``-phisteps``/``-phistep`` as the single command
would sample ``-phi start + k osc -osc osc``. Shot ``k`` is the command's crystal rotated by
``batch.random_orientations(seed, ...)[k]``, a uniform random rotation that depends only on
``(seed, k)``; its ``.json`` sidecar records the rotation and the ``-misset`` angles that make
``jaxbragg`` render the same image.

Files are named like a detector's: ``NAME_00001.img`` (``--first-number``, ``--digits``), SMV as the
reference's ``-intfile`` (per-image scale ``55000 / max`` unless ``-scale``, ``-adc``; header ``PHI``,
``OSC_START``, ``OSC_RANGE`` of that frame) or raw float32 (``--format float``, ``.bin``). Each file is
written atomically, so a file that exists is complete: a second run of the same command skips the files
already there and renders the rest (resume after an interruption; ``--overwrite`` renders everything).
A ``NAME.series.json`` manifest records the command; resuming with different settings is an error.
``--format nexus`` writes Eiger-style ``NAME_data_000001.h5`` files (one per rendered group) and a
``NAME_master.h5`` rewritten atomically after each (:mod:`jaxbragg.series_nexus`).

Images are rendered in groups with :func:`jaxbragg.batch.render_sharded` on every device (``--pixel-split``
shares each image between devices); with ``--distributed`` the run spans several processes or hosts
(docs/scaling.md). User errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import List, Optional

import numpy as np

from .cli import common
from .errors import InputError

RTD = 180.0 / math.pi
PROG = "jaxbragg-series"
_OUTPUT_FLAGS = ("-floatfile", "-floatimage", "-intfile", "-intimage", "-pgmfile", "-pgmimage",
                 "-noisefile", "-noiseimage", "-pngfile", "-nexusfile", "-cbffile")
#: Settings that change an image; a resumed run must agree on them (``--frames``/``--count`` may grow).
_MANIFEST_KEYS = ("mode", "start_phi", "osc", "seed", "format", "first_number", "digits", "flags", "inputs")
#: The most frames or shots one series may have (its file list and bookkeeping are built up front).
MAX_IMAGES = 1_000_000


class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line and status 2 (via main), not argparse's usage dump
        raise InputError(message)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _parser() -> _Parser:
    top = _Parser(prog=PROG, description="Render a rotation series or random-orientation shots, one file "
                                         "per image. nanoBragg flags follow '--'.")
    sub = top.add_subparsers(dest="mode", required=True, parser_class=_Parser)
    rot = sub.add_parser("rotation", help="frames of a rotation about the spindle")
    rot.add_argument("--frames", type=_positive_int, required=True, help="number of frames")
    rot.add_argument("--start-phi", type=_finite, default=0.0, help="spindle angle of frame 1 (deg)")
    rot.add_argument("--osc", type=_finite, required=True, help="oscillation per frame (deg, > 0)")
    shots = sub.add_parser("shots", help="stills in uniformly random orientations")
    shots.add_argument("--count", type=_positive_int, required=True, help="number of shots")
    shots.add_argument("--seed", type=int, default=0, help="orientation seed (>= 0; default 0)")
    for p in (rot, shots):
        p.add_argument("--prefix", required=True, help="file name stem, may include a directory")
        p.add_argument("--format", choices=("smv", "float", "nexus"), default="smv",
                       help="smv: NAME_00001.img (default); float: raw float32 NAME_00001.bin; nexus: "
                            "NAME_master.h5 + NAME_data_000001.h5 per group (extra h5)")
        p.add_argument("--first-number", type=int, default=1, help="number of the first file (default 1)")
        p.add_argument("--digits", type=_positive_int, default=5, help="digits in file numbers (default 5)")
        p.add_argument("--batch", type=_positive_int, help="images per call (default: fill the devices)")
        p.add_argument("--pixel-split", type=_positive_int, default=1,
                       help="devices that share each image (default 1)")
        p.add_argument("--overwrite", action="store_true", help="render every image, even existing ones")
        p.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() first (several processes or hosts)")
        p.add_argument("--coordinator", help="coordinator host:port for --distributed")
        p.add_argument("--num-processes", type=_positive_int, help="process count for --distributed")
        p.add_argument("--process-id", type=int, help="this process's id for --distributed")
    return top


def parse_args(argv: List[str]):
    """``(options, nanoBragg argv)``; the two are separated by ``--``."""
    if "--" not in argv:
        _, extra = _parser().parse_known_args(argv)     # report a bad series option first
        where = f" (before {extra[0]})" if extra else ""
        raise InputError(f"expected '--' between the series options and the nanoBragg flags{where}")
    i = argv.index("--")
    opts = _parser().parse_args(argv[:i])
    if opts.mode == "rotation" and opts.osc <= 0.0:
        raise InputError("--osc: the oscillation per frame must be positive")
    if opts.mode == "shots" and opts.seed < 0:
        raise InputError("--seed: must be >= 0")
    if opts.digits > 12:
        raise InputError("--digits: at most 12")
    if opts.first_number < 0:
        raise InputError("--first-number: must be >= 0")
    n = opts.frames if opts.mode == "rotation" else opts.count
    flag = "--frames" if opts.mode == "rotation" else "--count"
    if n > MAX_IMAGES:
        raise InputError(f"{flag}: {n} images is more than the limit of {MAX_IMAGES} per series")
    if opts.first_number + n - 1 >= 10 ** opts.digits:
        raise InputError(f"{flag}/--digits: file numbers up to {opts.first_number + n - 1} do not fit "
                         f"in {opts.digits} digits")
    return opts, argv[i + 1:]


def _file_names(opts, n: int):
    ext = {"smv": "img", "float": "bin", "nexus": "h5"}[opts.format]   # nexus: names of sidecars only
    return [f"{opts.prefix}_{opts.first_number + k:0{opts.digits}d}.{ext}" for k in range(n)]


def _is_complete(path: str, fmt: str, shape) -> bool:
    """A file the series wrote: the right size for this detector (files are written atomically, so a
    wrong size means some other file is in the way)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    n = shape[0] * shape[1]
    if fmt == "float":
        return size == 4 * n
    with open(path, "rb") as f:
        head = f.read(512).decode("latin-1")
    fields = dict(re.findall(r"([A-Z_0-9]+)=([^;\n]*)", head))
    try:
        hb, s1, s2 = int(fields["HEADER_BYTES"]), int(fields["SIZE1"]), int(fields["SIZE2"])
    except (KeyError, ValueError):
        return False
    return (s1, s2) == (shape[1], shape[0]) and size == hb + 2 * n


def _check_manifest(path: str, manifest: dict, overwrite: bool):
    if overwrite or not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        raise InputError(f"{path}: unreadable series manifest; remove it or use --overwrite")
    changed = [k for k in _MANIFEST_KEYS if old.get(k) != manifest.get(k)]
    if changed == ["inputs"] and isinstance(old.get("inputs"), dict):
        edited = [f"{flag} {rec['path']}" for flag, rec in manifest["inputs"].items()
                  if old["inputs"].get(flag) != rec]
        edited += [f"{flag}" for flag in old["inputs"] if flag not in manifest["inputs"]]
        raise InputError(f"{path}: input files changed since these files were rendered "
                         f"({', '.join(edited)}); restore them, or use another --prefix or --overwrite")
    if changed:
        raise InputError(f"{path}: these files were rendered with different settings ({', '.join(changed)});"
                         f" use another --prefix or --overwrite")


def _input_digests(parsed, info) -> dict:
    """SHA-256 of every input file the command reads, keyed by its flag (see
    :func:`jaxbragg.cli.input_files`): a resumed series must read what the first run read."""
    import hashlib
    from .cli import input_files
    from .io._common import read_bytes
    record = {}
    for flag, path in input_files(parsed, info).items():
        record[flag] = {"path": path, "sha256": hashlib.sha256(read_bytes(path, "input file")).hexdigest()}
    return record


def _check_names_against_inputs(opts, inputs):
    """No file the series writes (images ``PREFIX_NNNNN.img|bin``, sidecars ``.json``, the manifest
    ``PREFIX.series.json``) may be one of its inputs: an input whose resolved path lies in the series'
    directory with a name of that form is refused."""
    from .io._common import same_file
    stem = re.escape(os.path.basename(opts.prefix))
    from .series_nexus import names_pattern
    pattern = re.compile(rf"{stem}_\d{{{opts.digits},}}\.(img|bin|json)|{stem}\.series\.json|" + names_pattern(stem))
    directory = os.path.dirname(os.path.abspath(opts.prefix))
    for flag, rec in inputs.items():
        real = os.path.realpath(rec["path"])
        if pattern.fullmatch(os.path.basename(real)) and same_file(os.path.dirname(real), directory):
            raise InputError(f"--prefix {opts.prefix}: the series would overwrite the input file of {flag} "
                             f"({rec['path']})")


def _misset_rotation(parsed, setup, cwd):
    """Rotation M with ``lattice = L0 M^T``, L0 the command's crystal without ``-misset`` (identity if the
    command has none)."""
    from .cli.resolve import resolve
    if not any(f == "-misset" for f, _ in parsed):
        return np.eye(3)
    base = resolve(parsed + [("-misset", (0.0, 0.0, 0.0))], cwd).info["lattice"]
    return np.linalg.solve(base, setup.info["lattice"]).T


def _sidecar(k, number, name, seed, umat, misset, lattice):
    from .orientation import umat2misset
    total = umat @ misset
    return {"shot": number, "index": k, "file": os.path.basename(name), "seed": seed,
            "umat": umat.tolist(), "misset_deg": [a * RTD for a in umat2misset(total)],
            "lattice_A": (lattice @ umat.T * 1e10).tolist(),
            "note": "umat rotates the command's crystal (a_shot = umat a); jaxbragg with the command's "
                    "-misset replaced by (or, if absent, added as) -misset misset_deg renders this shot"}


def _int_counts(image32, setup):
    """The frame's SMV counts (uint16): the ``-intfile`` rule with its per-image scale unless ``-scale``."""
    from .cli import outputs as outmod
    roi = setup.config.roi_box()
    opts = setup.options
    stats = outmod.statistics(image32, roi, setup.params.mask)
    scale = opts["intfile_scale"]
    if scale <= 0.0:
        scale = 55000.0 / stats["max"] if stats["max"] > 0.0 else 1.0
    active = outmod.roi_mask(image32.shape, roi)
    return outmod.int_image(image32, scale, opts["adc"], active)


def _smv_blob(image32, info, setup):
    from . import io
    from .cli import outputs as outmod
    items = outmod.header_items(info, setup.options["adc"])
    return io.smv.smv_bytes(_int_counts(image32, setup), items)


def run(argv: List[str], out=None, err=None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    opts, nb_argv = parse_args(argv)
    from . import batch
    from .cli import Progress
    from .cli.flags import parse
    from .cli.resolve import resolve
    from .io import write_float
    from .io._common import atomic_write
    parsed = parse(nb_argv)
    for flag, _ in parsed:
        if flag in _OUTPUT_FLAGS:
            raise InputError(f"{flag}: {PROG} names its files with --prefix")
        if opts.mode == "rotation" and flag in ("-phi", "-osc"):
            raise InputError(f"{flag}: a rotation series takes --start-phi and --osc")
    import jax
    if not any(flag == "-float32" for flag, _ in parsed):
        jax.config.update("jax_enable_x64", True)
    if opts.distributed:
        jax.distributed.initialize(coordinator_address=opts.coordinator, num_processes=opts.num_processes,
                                   process_id=opts.process_id)
    elif opts.coordinator or opts.num_processes or opts.process_id is not None:
        raise InputError("--coordinator/--num-processes/--process-id need --distributed")
    lead = jax.process_index() == 0
    say = (lambda *a: print(*a, file=out)) if lead else (lambda *a: None)

    cwd = os.getcwd()
    if opts.mode == "rotation":
        parsed = parsed + [("-phi", (opts.start_phi,)), ("-osc", (opts.osc,))]
    setup = resolve(parsed, cwd)
    n = opts.frames if opts.mode == "rotation" else opts.count
    names = _file_names(opts, n)
    directory = os.path.dirname(os.path.abspath(names[0]))
    if not os.path.isdir(directory):
        raise InputError(f"{opts.prefix}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"{opts.prefix}: output directory {directory} is not writable")
    manifest = {"mode": opts.mode, "start_phi": getattr(opts, "start_phi", None),
                "osc": getattr(opts, "osc", None), "seed": getattr(opts, "seed", None),
                "format": opts.format, "first_number": opts.first_number, "digits": opts.digits,
                "flags": list(nb_argv), "count": n, "inputs": _input_digests(parsed, setup.info)}
    manifest_path = f"{opts.prefix}.series.json"
    nxs = None
    if opts.format == "nexus":
        from .series_nexus import open_series
        if jax.process_count() > 1:
            raise InputError("--format nexus: one process writes the master and data files; use "
                             "--format smv or float with several processes")
        nxs = open_series(opts, manifest, _MANIFEST_KEYS, setup, n)
    common.check_writable([names[0], names[-1], manifest_path]
                          + ([nxs.first_data_name(), nxs.master] if nxs is not None else []))
    _check_names_against_inputs(opts, manifest["inputs"])
    _check_manifest(manifest_path, manifest, opts.overwrite)
    try:
        mesh = batch.make_mesh(pixels=opts.pixel_split)
    except ValueError as e:
        raise InputError(f"--pixel-split: {e}")

    cfg, params, info = setup.config, setup.params, setup.info
    shape = (cfg.spixels, cfg.fpixels)
    sidecars = [os.path.splitext(name)[0] + ".json" for name in names] if opts.mode == "shots" else None
    if nxs is not None:
        names = [nxs.master] * n          # the file a sidecar names: the master holds every frame
    if nxs is not None:
        done = nxs.done()
    else:
        done = np.array([not opts.overwrite and _is_complete(name, opts.format, shape) for name in names])
    if jax.process_count() > 1:   # every process must plan the same groups
        from jax.experimental import multihost_utils
        done = np.asarray(multihost_utils.broadcast_one_to_all(done))
    todo = [k for k in range(n) if not done[k]]

    for w in setup.warnings:
        say(f"WARNING: {w}")
    if opts.mode == "rotation":
        steps = info["phisteps"]
        say(f"rotation series: {n} frames of {opts.osc:g} deg from phi = {opts.start_phi:g} deg, "
            f"{steps} phi step{'s' if steps != 1 else ''} per frame")
        umats = misset = None
    else:
        say(f"random-orientation shots: {n} shots, seed {opts.seed}")
        umats = batch.random_orientations(opts.seed, n)
        misset = _misset_rotation(parsed, setup, cwd)
    shown = (f"{os.path.basename(names[0])} .. {os.path.basename(names[-1])}" if nxs is None else
             f"{os.path.basename(nxs.master)} + {os.path.basename(opts.prefix)}_data_NNNNNN.h5")
    say(f"  detector {cfg.fpixels}x{cfg.spixels} pixels, {cfg.steps} steps per pixel; files {shown}")
    if lead:
        _write_json(manifest_path, manifest)
        if sidecars is not None:   # an image without its sidecar needs only the sidecar
            for k in range(n):
                if done[k] and not os.path.exists(sidecars[k]):
                    _write_json(sidecars[k], _sidecar(k, opts.first_number + k, names[k], opts.seed,
                                                      umats[k], misset, info["lattice"]))
    if not todo:
        if nxs is not None and not os.path.exists(nxs.master):
            nxs.write_master()
        say(f"all {n} files present; nothing to render")
        return 0

    # a group is one render_sharded call: whole lax.map steps on every batch device, no more than needed
    n_batch = mesh.shape[batch.BATCH_AXIS]
    per_device = -(-len(todo) // n_batch)
    group = opts.batch or batch.default_images_per_step(cfg, per_device, opts.pixel_split) * n_batch
    group = -(-min(group, per_device * n_batch) // n_batch) * n_batch
    say(f"  {n - len(todo)} already done; rendering {len(todo)} on {mesh.size} device(s) "
        f"({jax.process_count()} process(es)), {group} per call")

    def stack(ks):
        ks = ks + [ks[-1]] * (group - len(ks))       # a fixed group size: one compilation
        if opts.mode == "rotation":
            return batch.with_phi_windows(params, [(opts.start_phi + k * opts.osc) / RTD for k in ks])
        return batch.with_orientations(params, umats[ks])

    def write(k, image):
        image32 = np.asarray(image, np.float32)
        if nxs is not None:             # kept until the group's data file is written
            pending.append((k, _int_counts(image32, setup)))
            return
        if opts.format == "float":
            write_float(names[k], image32)
        else:
            frame = dict(info)
            if opts.mode == "rotation":
                frame.update(phi0=(opts.start_phi + k * opts.osc) / RTD, osc=opts.osc / RTD)
            atomic_write(names[k], [_smv_blob(image32, frame, setup)])
        if sidecars is not None:          # after the image: a sidecar never describes a missing file
            _write_json(sidecars[k], _sidecar(k, opts.first_number + k, names[k], opts.seed, umats[k],
                                              misset, info["lattice"]))
        print(f"writing {names[k]}", file=out)

    bar = Progress(err, len(todo)) if lead and setup.options["progress"] else None
    written = 0
    try:
        for g0 in range(0, len(todo), group):
            ks = todo[g0:g0 + group]
            with common.critical():     # a signal is acted on between groups, never inside XLA
                images = batch.render_sharded(cfg, stack(ks), mesh=mesh, keep_padding=True)
                local = [(j, np.asarray(image)) for j, image in batch.local_images(images)]
            pending = []
            for j, image in local:   # this process's images only
                if j < len(ks):
                    write(ks[j], image)
                    written += 1 if nxs is None else 0
            if pending:
                path = nxs.write([k for k, _ in pending], [c for _, c in pending])
                for k, _ in pending:     # after the data file: a sidecar never describes a missing frame
                    if sidecars is not None:
                        _write_json(sidecars[k], _sidecar(k, opts.first_number + k, names[k], opts.seed,
                                                          umats[k], misset, info["lattice"]))
                written += len(pending)
                print(f"writing {path} ({len(pending)} frames) and {nxs.master}", file=out)
            if bar is not None:
                bar.update(min(g0 + group, len(todo)))
    except KeyboardInterrupt as stop:
        if bar is not None:
            bar.close()
        word, code = (("terminated", 143) if isinstance(stop, common.Terminated) else ("interrupted", 130))
        print(f"{PROG}: {word} after writing {written} of {len(todo)} files; run the same command "
              f"again to render the rest", file=err)
        return code
    if bar is not None:
        bar.close()
    say(f"rendered {len(todo)} images")
    return 0


def _json_bytes(record: dict) -> bytes:
    """One key per line, each value compact (a 3 x 3 matrix stays on one line)."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _write_json(path, record):
    from .io._common import atomic_write
    atomic_write(path, [_json_bytes(record)])


USAGE = (f"usage: {PROG} rotation --frames N --osc DEG [--start-phi DEG] --prefix NAME [--format smv|float|nexus] "
         f"-- FLAGS\n       {PROG} shots --count N [--seed S] --prefix NAME [--format smv|float|nexus] -- FLAGS\n"
         f"FLAGS are jaxbragg's (nanoBragg's) flags; '{PROG} rotation -h' lists every option")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2

    def body() -> int:
        try:
            return run(argv)
        except SystemExit as e:          # --help
            return int(e.code or 0)

    return common.guarded(PROG, body, "use a smaller --batch or -tile")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
