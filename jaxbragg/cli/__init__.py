"""``jaxbragg`` command line: nanoBragg-compatible flags in, image files out.

The layer is thin: :mod:`.flags` parses argv, :mod:`.resolve` applies the reference's defaults and
precedence and builds ``(SimConfig, Params)``, :func:`jaxbragg.simulate.simulate` renders, and this module
prints the summary (stdout) and writes the files. Large renders report progress on stderr (a redrawn bar
on a terminal, ``N% done`` lines otherwise; :class:`Progress`). Any user error becomes one line on stderr
and exit status 2, before anything is written.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import numpy as np

from ..errors import InputError
from . import flags as flags_mod
from .resolve import resolve

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


def _check_writable(paths: List[str]):
    for path in paths:
        d = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(d):
            raise InputError(f"{path}: output directory does not exist")
        if not os.access(d, os.W_OK):
            raise InputError(f"{path}: output directory is not writable")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory")


#: Jobs of at least this many pixel-samples are rendered in chunks with a progress report (smaller jobs
#: take well under a second after compilation).
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


def _render(setup, progress: bool, stream=None):
    """Render the image; a job of PROGRESS_MIN_WORK pixel-samples or more is rendered in row chunks
    with a :class:`Progress` report on ``stream`` (default: the current ``sys.stderr``)."""
    import jax
    import jax.numpy as jnp
    from ..simulate import finish_image, pixel_values, simulate
    cfg, params = setup.config, setup.params
    f0, f1, s0, s1 = cfg.roi_box()
    n_pix = max(f1 - f0 + 1, 0) * max(s1 - s0 + 1, 0)
    work = n_pix * cfg.samples_per_pixel
    if not progress or work < PROGRESS_MIN_WORK or n_pix < 64:
        return np.asarray(jax.block_until_ready(simulate(cfg, params)))
    chunk = -(-n_pix // PROGRESS_CHUNKS)
    values_fn = jax.jit(pixel_values, static_argnums=(0, 3))
    bar = Progress(sys.stderr if stream is None else stream, n_pix)
    parts = []
    try:
        for start in range(0, n_pix, chunk):
            parts.append(np.asarray(values_fn(cfg, params, start, chunk)))
            bar.update(min(start + chunk, n_pix))
    finally:
        bar.close()
    values = jnp.asarray(np.concatenate(parts)[:n_pix])
    return np.asarray(jax.jit(finish_image, static_argnums=0)(cfg, params, values))


def run(argv: List[str], out=None, err=None) -> int:
    """Run one command line; returns the exit status.

    ``out`` (the summary) and ``err`` (progress reports) default to the *current* ``sys.stdout`` and
    ``sys.stderr``.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from . import outputs as outmod
    parsed = flags_mod.parse(argv)
    import jax
    # the command line computes in double like the reference (set-up is NumPy float64 regardless);
    # -float32 renders in single precision
    jax.config.update("jax_enable_x64", True)
    setup = resolve(parsed, os.getcwd())
    opts, info = setup.options, setup.info
    files = {"float": setup.outputs.get("float") or outmod.DEFAULT_NAMES["float"],
             "int": setup.outputs.get("int") or outmod.DEFAULT_NAMES["int"]}
    if opts["write_pgm"]:
        files["pgm"] = setup.outputs.get("pgm") or outmod.DEFAULT_NAMES["pgm"]
    if opts["noise"]:
        files["noise"] = setup.outputs.get("noise") or outmod.DEFAULT_NAMES["noise"]
    if setup.outputs.get("png"):
        files["png"] = setup.outputs["png"]
    _check_writable(list(files.values()))

    _print_summary(setup, out)
    if opts["trace_pixel"] is not None or opts["printout_pixel"] is not None:
        from .trace import trace_pixel
        s, f = opts["trace_pixel"] if opts["trace_pixel"] is not None else opts["printout_pixel"][::-1]
        trace_pixel(setup, int(s), int(f), out)
    t0 = time.perf_counter()
    image = _render(setup, opts["progress"], err)
    image32 = image.astype(np.float32)
    print(f"rendered {setup.config.spixels}x{setup.config.fpixels} pixels in {time.perf_counter() - t0:.3f} s",
          file=out)

    roi = setup.config.roi_box()
    stats = outmod.statistics(image32, roi, setup.params.mask)
    active = outmod.roi_mask(image32.shape, roi)
    print("max_I = %g  at pixel (slow %d, fast %d)" % (stats["max"], *stats["argmax"]), file=out)
    print("mean= %g rms= %g rmsd= %g" % (stats["mean"], stats["rms"], stats["rmsd"]), file=out)

    # build every output in memory first; a failure leaves no file behind
    blobs = {}
    from .. import io
    adc = opts["adc"]
    scale = opts["intfile_scale"]
    if scale <= 0.0:
        scale = 55000.0 / stats["max"] if stats["max"] > 0.0 else 1.0
    print(f"intfile_scale = {scale:g}", file=out)
    items = outmod.header_items(info, adc)
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
    if info["hkl"] is not None and info["grid"] is not None:
        # like the reference: cache the structure factors read from -hkl for runs without -hkl
        try:
            io.write_fdump(info["dumpfile"], info["grid"])
            print(f"writing dump file for next time: {info['dumpfile']}", file=out)
        except InputError as e:
            print(f"WARNING: unable to write dump file: {e}", file=out)
    io.write_float(files["float"], image32)
    print(f"writing {files['float']} as {image32.size} 4-byte floats", file=out)
    for key in ("int", "pgm", "png", "noise"):
        if key in blobs:
            io._common.atomic_write(files[key], [blobs[key]])
            print(f"writing {files[key]}", file=out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: jaxbragg -cell a b c al be ga -default_F F [-hkl F.hkl] [-floatfile out.bin] ...\n"
              "       jaxbragg -demo        (render a built-in example)\n"
              "see specs/cli.md for every flag", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except InputError as e:
        print(f"jaxbragg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxbragg: interrupted; no output written", file=sys.stderr)
        return 130
    except MemoryError:
        print("jaxbragg: error: out of memory; use a smaller -tile or detector", file=sys.stderr)
        return 2
    except Exception as e:  # an internal error: one line, no traceback (JAXBRAGG_DEBUG=1 shows it)
        if os.environ.get("JAXBRAGG_DEBUG"):
            raise
        print(f"jaxbragg: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
