"""``jaxbragg`` command line: nanoBragg-compatible flags in, image files out.

The layer is thin: :mod:`.flags` parses argv, :mod:`.resolve` applies the reference's defaults and
precedence and builds ``(SimConfig, Params)``, :func:`jaxbragg.simulate.simulate` renders, and this module
prints the summary (stdout) and writes the files. Large renders report progress on stderr (a redrawn bar
on a terminal, ``N% done`` lines otherwise; :class:`Progress`). Any user error becomes one line on stderr
and exit status 2, before anything is written (:func:`prepare` does every check that can fail before the
render, the memory plan of :mod:`jaxbragg.resources` included). The outputs are built in memory and written
all-or-nothing at the end; Ctrl-C (exit 130) or SIGTERM (exit 143) leave no file behind.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from . import flags as flags_mod
from . import common, detector_files, stages
from .resolve import resolve, translate  # noqa: F401  (resolve: public)

RTD = 57.29577951308232


def _fmt_vec(v) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def _print_summary(setup, out):
    info, cfg = setup.info, setup.config
    p = lambda *a: print(*a, file=out)
    p("jaxbragg: nanoBragg-compatible diffraction simulator (JAX)")
    for w in setup.warnings:
        p(f"WARNING: {w}")
    if info["misset_random"] is not None:
        p("random orientation misset angles: %f %f %f deg" % info["misset_random"])
    if info["fdump_used"]:
        p(f"reading structure factors from cache {info['fdump_used']} (no -hkl given)")
    p(f"{info['convention']} convention selected; pivoting detector around "
      f"{'direct beam spot' if info['pivot'] == 'beam' else 'sample'}")
    a = np.linalg.norm(info["lattice"], axis=1) * 1e10
    p(f"  unit cell lengths: {a[0]:g} {a[1]:g} {a[2]:g} A;  crystal {info['shape']} "
      f"{info['Ncells'][0]:.0f}x{info['Ncells'][1]:.0f}x{info['Ncells'][2]:.0f} cells")
    p(f"  {info['hkl_count']} structure factors from file (all others = {info['default_F']:g})")
    p(f"  wavelength {info['lambda0']:g} m, {info['sources']} source(s), fluence {info['fluence']:g} photons/m^2")
    p(f"  distance={info['distance']:g} m close_distance={info['close_distance']:g} m  "
      f"detector {cfg.fpixels}x{cfg.spixels} pixels of {info['pixel']:g} m")
    p(f"  Xbeam={info['Xbeam']:g} Ybeam={info['Ybeam']:g}  Fbeam={info['Fbeam']:g} Sbeam={info['Sbeam']:g}"
      f"  Fclose={info['Fclose']:g} Sclose={info['Sclose']:g}")
    p(f"  DIRECTION_OF_DETECTOR_X-AXIS= {_fmt_vec(info['fdet'])}")
    p(f"  DIRECTION_OF_DETECTOR_Y-AXIS= {_fmt_vec(info['sdet'])}")
    p(f"  DIRECTION_OF_DETECTOR_Z-AXIS= {_fmt_vec(info['odet'])}")
    p(f"  INCIDENT_BEAM_DIRECTION= {_fmt_vec(info['beam'])}")
    p(f"  spindle ROTATION_AXIS= {_fmt_vec(info['spindle'])}")
    p(f"  {info['mosaic_domains']} mosaic domains over mosaic spread of {info['mosaic_spread'] * RTD:g} degrees")
    p(f"  {info['phisteps']} phi steps from {info['phi0'] * RTD:g} to {(info['phi0'] + info['osc']) * RTD:g} degrees"
      + ("  (C-parity phi carry-over ON)" if cfg.phi_carryover else ""))
    p(f"  {cfg.oversample}x{cfg.oversample} pixel oversample steps"
      + (" +thick" if cfg.oversample_thick else "") + (" +polar" if cfg.oversample_polar else "")
      + (" +omega" if cfg.oversample_omega else ""))
    p(f"  sensor {info['thick']:g} m thick in {info['thicksteps']} layers;  {cfg.steps} steps per pixel, "
      f"{'float32' if info['float32'] else 'float64'}")


#: The flag that names each output (for messages).
OUTPUT_FLAG = {"float": "-floatfile", "int": "-intfile", "pgm": "-pgmfile", "noise": "-noisefile",
               "png": "-pngfile", "dump": "-dump", "nexus": "-nexusfile", "cbf": "-cbffile"}


#: The flags whose value names a file the run reads.
INPUT_FLAGS = ("-hkl", "-mat", "-matrix", "-img", "-mask", "-sourcefile", "-expt")


def input_files(parsed, info) -> Dict[str, str]:
    """Every file the run reads, keyed by the flag that names it (the ``Fdump.bin`` cache read when there
    is no ``-hkl`` under ``-dump``'s name): no output may be one of them."""
    inputs = {name: values[0] for name, values in parsed if name in INPUT_FLAGS}
    if info.get("fdump_used"):
        inputs["the structure-factor cache (no -hkl)"] = info["fdump_used"]
    return inputs


@dataclasses.dataclass
class Prepared:
    """A command line checked and resolved, ready to render: everything :func:`run` does before the
    render (and all that can fail with exit status 2)."""
    parsed: list
    setup: object
    files: Dict[str, str]
    estimate: object


def prepare(argv: List[str], available: Optional[int] = None, device: Optional[int] = None,
            detect: bool = True) -> Prepared:
    """Parse, resolve, check the outputs and fit the job into memory (:func:`jaxbragg.resources.plan_memory`;
    ``available``/``device``/``detect`` are passed on, ``-max_memory_gb`` overrides them).

    Raises:
      InputError: one line naming the flag or file; nothing has been written.
    """
    from . import outputs as outmod
    from .. import resources
    translation = translate(argv, os.getcwd())     # flags -> Experiment + run options (+ float64 set-up)
    parsed, setup = translation.parsed, translation.setup
    opts, info = setup.options, setup.info
    files = {"float": setup.outputs.get("float") or outmod.DEFAULT_NAMES["float"],
             "int": setup.outputs.get("int") or outmod.DEFAULT_NAMES["int"]}
    if opts["write_pgm"]:
        files["pgm"] = setup.outputs.get("pgm") or outmod.DEFAULT_NAMES["pgm"]
    if opts["noise"]:
        files["noise"] = setup.outputs.get("noise") or outmod.DEFAULT_NAMES["noise"]
    if setup.outputs.get("png"):
        files["png"] = setup.outputs["png"]
    files.update({k: setup.outputs[k] for k in detector_files.FLAGS if setup.outputs.get(k)})
    detector_files.check(files, setup.experiment)    # -nexusfile/-cbffile: extra installed, path writable
    n_panels = len(setup.panel_setups or [setup])
    common.check_writable([outmod.panel_path(v, k, detector_files.files_per_output(key, n_panels))
                           for key, v in files.items()
                           for k in range(detector_files.files_per_output(key, n_panels))])
    written = dict(files)
    if info["hkl"] is not None and info["grid"] is not None:
        written["dump"] = info["dumpfile"]
    common.check_distinct(written, OUTPUT_FLAG, input_files(parsed, info))
    cfg = setup.config
    for flag in ("trace_pixel", "printout_pixel"):
        if opts[flag] is not None:
            s, f = opts[flag] if flag == "trace_pixel" else opts[flag][::-1]
            if not (0 <= s < cfg.spixels and 0 <= f < cfg.fpixels):
                raise InputError(f"-{flag}: pixel (slow {s}, fast {f}) is outside the "
                                 f"{cfg.fpixels}x{cfg.spixels}-pixel detector")
    if opts["max_memory"] is not None:      # replaces the detected host (and accelerator) memory
        limit = int(opts["max_memory"])
        on_device = device is not None or (detect and resources.device_memory() is not None)
        available, device, detect = limit, (limit if on_device else None), False
    grid = info["grid"]
    config, estimate, note = resources.plan_memory(
        cfg, available=available, device=device, detect=detect, names=resources.CLI_NAMES,
        outputs=[k for k in files if k in ("noise", "pgm", "png")],
        grid_cells=grid.F.size if grid is not None else 0)
    for panel_setup in setup.panel_setups or []:       # every panel renders with the same knobs
        panel_setup.config = dataclasses.replace(
            panel_setup.config, **{k: getattr(config, k) for k in ("tile_pixels", "sample_budget", "precision")})
    setup.config = config
    if note:
        setup.warnings.append(note)
    return Prepared(parsed, setup, files, estimate)


#: Jobs of at least this many pixel-samples are rendered in chunks (so that Ctrl-C is honoured within a
#: chunk) with a progress report (smaller jobs take well under a second after compilation).
PROGRESS_MIN_WORK = 20_000_000
#: Number of chunks (so progress updates) of a reported job.
PROGRESS_CHUNKS = 20
#: On a terminal the bar appears only once the job is estimated to take at least this long (seconds).
PROGRESS_MIN_SECONDS = 2.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _clock(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress of a chunked render, on ``stream`` (the CLI passes stderr).

    On a terminal: one line redrawn with carriage returns,
    ``[########................]  35%  elapsed 0:02  ETA 0:04``, ended with a newline by :meth:`close`.
    It is drawn only once the elapsed time, or the elapsed time plus the ETA, reaches ``delay`` seconds,
    so quick jobs leave no trace. Otherwise (a file, a pipe, a log): the reference's plain ``N% done``
    lines, one per update, whatever the timing.

    The ETA is extrapolated from the chunks after the first, whose time includes compilation; until a
    second chunk is done it shows ``--:--``.
    """

    WIDTH = 24

    def __init__(self, stream, total: int, tty: Optional[bool] = None, delay: float = PROGRESS_MIN_SECONDS,
                 clock=time.perf_counter):
        self.stream, self.total = stream, max(int(total), 1)
        self.tty = _is_tty(stream) if tty is None else tty
        self.delay, self.clock = delay, clock
        self.t0 = clock()
        self.first = None           # (done, time) at the first update
        self.drawn = False

    def eta(self, done: int, now: float) -> Optional[float]:
        """Seconds left, from the rate since the first update; None before a second update."""
        if self.first is None or done <= self.first[0]:
            return None
        return (now - self.first[1]) / (done - self.first[0]) * max(self.total - done, 0)

    def line(self, done: int, now: float) -> str:
        frac = min(max(done / self.total, 0.0), 1.0)
        eta = self.eta(done, now)
        fill = int(frac * self.WIDTH)
        return (f"[{'#' * fill}{'.' * (self.WIDTH - fill)}] {int(frac * 100):3d}%  "
                f"elapsed {_clock(now - self.t0)}  ETA {'--:--' if eta is None else _clock(eta)}")

    def update(self, done: int) -> None:
        now = self.clock()
        if self.tty:
            eta = self.eta(done, now)
            elapsed = now - self.t0
            if self.drawn or elapsed >= self.delay or (eta is not None and elapsed + eta >= self.delay):
                self.stream.write("\r" + self.line(done, now))
                self.drawn = True
        else:
            print(f"{min(100, done * 100 // self.total)}% done", file=self.stream)
        if self.first is None:
            self.first = (done, now)
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _values_stage(cfg, count, tree):
    from ..simulate import pixel_values
    params, start = tree
    return pixel_values(cfg, params, start, count)


def _finish_stage(cfg, tree):
    from ..simulate import finish_image
    params, values = tree
    return finish_image(cfg, params, values)


def _stage(name, fn, static, tree):
    """Run a compiled stage (see :mod:`jaxbragg.cli.stages`)."""
    import jax
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    with common.critical():     # a signal is acted on when the XLA call has returned
        return stages.call(name, fn, static, treedef, leaves)


def _render(setup, progress: bool, stream=None):
    """Render the image: the pixel values of the ROI window, then masking and placement.

    A job of PROGRESS_MIN_WORK pixel-samples or more is computed in PROGRESS_CHUNKS row chunks (so that
    Ctrl-C is honoured within a chunk's time), with a :class:`Progress` report on ``stream`` (default: the
    current ``sys.stderr``) unless ``progress`` is off; a smaller one in a single chunk. Both go through
    the same two compiled stages, so the image does not depend on the chunking (a single fused
    :func:`jaxbragg.simulate.simulate` can differ in the last bit in float32, where XLA fuses across the
    stage boundary).
    """
    import jax
    import jax.numpy as jnp
    from ..simulate import simulate
    cfg, params = setup.config, setup.params
    f0, f1, s0, s1 = cfg.roi_box()
    n_pix = max(f1 - f0 + 1, 0) * max(s1 - s0 + 1, 0)
    if n_pix == 0:
        return np.asarray(simulate(cfg, params))
    work = n_pix * cfg.samples_per_pixel
    chunked = work >= PROGRESS_MIN_WORK and n_pix >= 64
    chunk = -(-n_pix // PROGRESS_CHUNKS) if chunked else n_pix
    bar = Progress(sys.stderr if stream is None else stream, n_pix) if progress and chunked else None
    parts = []
    try:
        for start in range(0, n_pix, chunk):
            # with interpolation a chunk is a tuple (tricubic, nearest, first bad sample)
            parts.append(jax.tree_util.tree_map(np.asarray,
                                                _stage("values", _values_stage, (cfg, chunk), (params, start))))
            if bar is not None:
                bar.update(min(start + chunk, n_pix))
            common.checkpoint()
    finally:
        if bar is not None:
            bar.close()
    values = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)[:n_pix]), *parts)
    return np.asarray(_stage("finish", _finish_stage, (cfg,), (params, values)))


def run(argv: List[str], out=None, err=None) -> int:
    """Run one command line; returns the exit status.

    ``out`` (the summary) and ``err`` (progress reports) default to the *current* ``sys.stdout`` and
    ``sys.stderr``.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with np.errstate(all="ignore"):
        return _run(argv, out, err)


def _enable_compilation_cache(jax) -> None:
    """Persistent XLA compilation cache for the command line (the library never sets it).

    Location: ``$JAXBRAGG_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxbragg/xla`` (``~/.cache/jaxbragg/xla``);
    ``JAXBRAGG_CACHE_DIR=off`` (or an empty value) disables it. A repeated command line then skips
    compilation (seconds on a 2-core machine).
    """
    path = os.environ.get("JAXBRAGG_CACHE_DIR")
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "jaxbragg", "xla")
    if not path or path.lower() == "off":
        stages.set_stage_dir(None)
        return
    try:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        stages.set_stage_dir(os.path.join(path, "stages"))
    except (OSError, AttributeError):   # an unwritable cache location only costs speed
        stages.set_stage_dir(None)


def _run(argv, out, err) -> int:
    from . import outputs as outmod
    parsed = flags_mod.parse(argv)
    import jax
    # the command line computes in double like the reference; -float32 keeps float64 parameters and
    # geometry and runs only the per-sample stage in single precision (SimConfig.precision)
    jax.config.update("jax_enable_x64", True)
    _enable_compilation_cache(jax)
    prep = prepare(argv)
    setup, files = prep.setup, prep.files
    opts, info = setup.options, setup.info

    _print_summary(setup, out)
    if opts["trace_pixel"] is not None or opts["printout_pixel"] is not None:
        from .trace import trace_pixel
        s, f = opts["trace_pixel"] if opts["trace_pixel"] is not None else opts["printout_pixel"][::-1]
        trace_pixel(setup, int(s), int(f), out)
    out.flush()
    common.checkpoint()
    setups = setup.panel_setups or [setup]
    writes, floats, counts = [], set(), []
    for k, panel_setup in enumerate(setups):     # one image per panel (one for a one-panel detector)
        if len(setups) > 1:
            print(f"panel {k} of {len(setups)}:", file=out)
        blobs = _image_blobs(panel_setup, files, opts, panel_setup.info, out, err)
        for key in ("float", "int", "pgm", "png", "noise"):
            if key in blobs:
                writes.append((outmod.panel_path(files[key], k, len(setups)), blobs[key], False))
        floats.add((outmod.panel_path(files["float"], k, len(setups)), len(blobs["float"]) // 4))
        if "counts" in blobs:
            counts.append(blobs["counts"])
    if counts:          # -cbffile: one file per panel; -nexusfile: one file, every panel a module
        for key, path, blob in detector_files.blobs(files, setup, counts):
            writes.append((path, blob, False))
    if info["hkl"] is not None and info["grid"] is not None:
        # like the reference: cache the structure factors read from -hkl for runs without -hkl
        from .. import io
        writes.insert(0, (info["dumpfile"], io.fdump.fdump_bytes(info["grid"]), True))
    common.checkpoint()
    interrupted = common.write_outputs(writes, out)
    for path, blob, optional in writes:
        if optional:
            if os.path.exists(path):
                print(f"writing dump file for next time: {path}", file=out)
        elif path in dict(floats):
            print(f"writing {path} as {dict(floats)[path]} 4-byte floats", file=out)
        else:
            print(f"writing {path}", file=out)
    if interrupted:
        print("jaxbragg: interrupted after the output files were written", file=sys.stderr)
        return 130
    return 0


def _image_blobs(setup, files, opts, info, out, err):
    """Render one image (one panel) and build the bytes of every output kind in ``files`` (nothing is
    written here), printing the reference's statistics lines."""
    from . import outputs as outmod
    t0 = time.perf_counter()
    image = _render(setup, opts["progress"], err)
    common.checkpoint()
    image32 = image.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(image32)))
    if bad:
        raise InputError(f"the rendered image has {bad} NaN or infinite pixels (intensities beyond the float "
                         f"range): lower -N/-Na/-Nb/-Nc/-xtalsize, -fluence/-flux or the structure factors "
                         f"(-default_F/-hkl)")
    print(f"rendered {setup.config.spixels}x{setup.config.fpixels} pixels in {time.perf_counter() - t0:.3f} s",
          file=out)

    roi = setup.config.roi_box()
    stats = outmod.statistics(image32, roi, setup.params.mask)
    active = outmod.roi_mask(image32.shape, roi)
    print("max_I = %g  at pixel (slow %d, fast %d)" % (stats["max"], *stats["argmax"]), file=out)
    print("mean= %g rms= %g rmsd= %g" % (stats["mean"], stats["rms"], stats["rmsd"]), file=out)

    # build every output in memory first; then write them all or none
    blobs = {}
    from .. import io
    adc = opts["adc"]
    scale = opts["intfile_scale"]
    if scale <= 0.0:
        scale = 55000.0 / stats["max"] if stats["max"] > 0.0 else 1.0
    print(f"intfile_scale = {scale:g}", file=out)
    items = outmod.header_items(info, adc)
    blobs["float"] = np.ascontiguousarray(image32, dtype="<f4").tobytes()
    blobs["int"] = io.smv.smv_bytes(outmod.int_image(image32, scale, adc, active), items)
    if "pgm" in files:
        pgm_scale = opts["pgm_scale"]
        if pgm_scale <= 0.0:
            pgm_scale = 250.0 / (5.0 * stats["rmsd"]) if stats["rmsd"] > 0.0 else scale
        print(f"pgm_scale = {pgm_scale:g}", file=out)
        blobs["pgm"] = io.pgm.pgm_bytes(outmod.pgm_image(image32, pgm_scale, active), pgm_scale)
    if "png" in files:
        from ..io.png import png_bytes
        white = outmod.png_white_level(image32, roi, setup.params.mask)
        print(f"png white level = {white:g} photons", file=out)
        blobs["png"] = png_bytes(outmod.png_image(image32, white, active), {
            "Software": "jaxbragg",
            "Comment": f"grey = round(255*sqrt(min(I/W,1))), I = photons/pixel, W = {white:g} "
                       f"(the {outmod.PNG_WHITE_PERCENTILE:g}th percentile)"})
    if "noise" in files:
        noisy, photons, overloads = outmod.noise_image(image32, opts["seed"], adc, active,
                                                       use_jax=opts["noise_jax"])
        generator = "jax.random.poisson" if opts["noise_jax"] else "the reference's generator"
        print(f"{photons:.0f} photons on noise image ({overloads} overloads; {generator})", file=out)
        blobs["noise"] = io.smv.smv_bytes(noisy, items)
    if files.keys() & detector_files.FLAGS.keys():     # the noise counts when noise is on, else -intfile's
        blobs["counts"] = noisy if "noise" in files else outmod.int_image(image32, scale, adc, active)
    return blobs


def _help(argv) -> int:
    """``-h``/``-help``/``--help``: every flag, grouped, on stdout; ``--version``: the version. Exit 0."""
    if any(a in flags_mod.HELP_FLAGS for a in argv):
        from .help import text
        print(text())
    else:
        from .. import __version__
        print(f"jaxbragg {__version__}")
    sys.stdout.flush()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in flags_mod.HELP_FLAGS + flags_mod.VERSION_FLAGS for a in argv):
        return common.guarded("jaxbragg", lambda: _help(argv), "")
    if not argv:
        print("usage: jaxbragg -cell a b c al be ga -default_F F [-hkl F.hkl] [-floatfile out.bin] ...\n"
              "       jaxbragg -demo        (render a built-in example)\n"
              "       jaxbragg -h           (every flag with its unit and default)", file=sys.stderr)
        return 2
    return common.guarded("jaxbragg", lambda: run(argv),
                          "use a smaller -tile or detector, or lower -max_memory_gb")


def entry() -> None:  # pragma: no cover - exercised by the installed ``jaxbragg`` command
    """Console entry point: :func:`main`, then a prompt exit (:func:`jaxbragg.cli.common.exit_now`)."""
    common.exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
