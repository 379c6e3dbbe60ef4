"""``jaxbragg -h``: every flag with its value, unit and default, grouped by topic.

Each entry is ``(spellings, value, meaning with unit and default)``; :func:`text` lays them out. A test
checks that every flag of :mod:`jaxbragg.cli.flags` appears here, so the help cannot fall behind.
"""
from __future__ import annotations

GROUPS = [
    ("Crystal", [
        ("-cell", "a b c al be ga", "unit cell [A, deg]; missing lengths = a, missing angles = 90"),
        ("-mat -matrix", "FILE", "MOSFLM orientation matrix (reciprocal vectors x wavelength), instead of -misset"),
        ("-misset", "rx ry rz | random", "crystal rotations about x, then y, then z [deg] (default 0 0 0)"),
        ("-misset_seed", "N", "seed of '-misset random' (default: the -seed value)"),
        ("-N", "N", "unit cells along every axis (default 1)"),
        ("-Na -Nb -Nc", "N", "unit cells along a, b or c (default 1)"),
        ("-xtalsize -xtal_size -samplesize -sample_size", "MM", "crystal width along every axis [mm]; sets N"),
        ("-xtal_thick -xtal_x -sample_thick -sample_x", "MM", "crystal size along a [mm]"),
        ("-xtal_width -xtal_y -sample_width -sample_y -width", "MM", "crystal size along b [mm]"),
        ("-xtal_height -xtal_z -sample_height -sample_z -height", "MM", "crystal size along c [mm]"),
        ("-square_xtal", "", "parallelepiped crystal (default)"),
        ("-round_xtal", "", "ellipsoidal crystal"),
        ("-gauss_xtal", "", "Gaussian spots, no inter-Bragg maxima"),
        ("-tophat_spots -binary_spots", "", "lattice factor clipped at its FWHM"),
        ("-fudge", "F", "shape-factor width multiplier (default 1)"),
        ("-mosaic -mosaicity -mosaic_spread", "DEG", "isotropic mosaic spread [deg] (default 0)"),
        ("-mosaic_domains -mosaic_dom", "N", "mosaic domains (default 1; 10 with a spread)"),
        ("-mosaic_seed", "N", "seed of the mosaic domains (default 12345678)"),
        ("-density -sample_density -MW -molecular_weight", "X", "read and ignored, as by the reference"),
    ]),
    ("Structure factors", [
        ("-hkl", "FILE", "structure factors: h k l F text, Fdump, .mtz or .cif (writes -dump)"),
        ("-default_F", "F", "amplitude of every reflection not in -hkl (default 0)"),
        ("-dump", "FILE", "structure-factor cache written with -hkl, read without it (default Fdump.bin)"),
        ("-interpolate", "", "tricubic interpolation between Bragg peaks (default: on below 3 cells)"),
        ("-nointerpolate", "", "no interpolation"),
        ("-water", "UM", "water droplet around the crystal [um] (background; default 0)"),
        ("-stol -4stol -Q -stolout", "FILE", "amorphous-scattering tables: read and ignored, as by the reference"),
    ]),
    ("Beam", [
        ("-lambda -wave", "A", "wavelength [A] (default 1)"),
        ("-energy", "EV", "photon energy [eV], instead of -lambda"),
        ("-fluence", "PH/M2", "photons per m^2 (default 1.25932e29)"),
        ("-flux", "PH/S", "flux [photons/s]; fluence = flux x exposure / beamsize^2"),
        ("-exposure", "S", "exposure time [s] (default 1)"),
        ("-beamsize", "MM", "beam width [mm] (default 0.1); clips the crystal"),
        ("-dispersion", "%", "spectral width delta-lambda/lambda [%] (default 0)"),
        ("-dispsteps", "N", "wavelengths across -dispersion (default: 2 with a dispersion)"),
        ("-divergence", "MRAD", "horizontal and vertical divergence range [mrad] (default 0)"),
        ("-hdivrange -vdivrange", "MRAD", "horizontal / vertical divergence range [mrad]"),
        ("-hdivstep -vdivstep", "MRAD", "divergence step [mrad]"),
        ("-hdivsteps -vdivsteps -divsteps", "N", "divergence grid points per axis"),
        ("-round_div", "", "drop the corners of the divergence grid (default)"),
        ("-square_div", "", "full divergence grid"),
        ("-sourcefile", "FILE", "source list: X Y Z weight lambda per line (replaces the grid)"),
        ("-polar", "K", "Kahn polarization factor (default 0)"),
        ("-nopolar", "", "no polarization factor"),
        ("-polar_vector", "X Y Z", "E-vector direction (default: the convention's)"),
        ("-beam_vector", "X Y Z", "beam direction, source to sample (default: the convention's)"),
        ("-coherent", "", "read and ignored, as by the reference"),
        ("-dmin", "A", "resolution limit [A]: no scattering beyond it (default 0 = none)"),
    ]),
    ("Detector", [
        ("-distance", "MM", "sample to beam spot along the beam [mm] (default 100); beam pivot"),
        ("-close_distance", "MM", "sample to detector plane [mm]; sample pivot"),
        ("-pixel", "MM", "pixel size [mm] (default 0.1)"),
        ("-detsize -detsize_f -detsize_s", "MM", "detector size [mm] (default 102.4)"),
        ("-detpixels -detpixels_f -detpixels_x -detpixels_s -detpixels_y", "N", "detector size in pixels"),
        ("-Xbeam -Ybeam", "MM", "direct-beam position in the convention's axes [mm] (default: centre); beam pivot"),
        ("-Xclose -Yclose", "MM", "point of the detector nearest the sample [mm]; sample pivot"),
        ("-ORGX -ORGY", "PIXELS", "XDS origin [pixels]; sample pivot"),
        ("-pivot", "beam|sample", "what stays fixed when the detector rotates"),
        ("-mosflm -denzo -adxv -xds -dials", "", "detector convention (default mosflm)"),
        ("-fdet_vector -sdet_vector -odet_vector", "X Y Z", "fast, slow, normal axes (custom convention)"),
        ("-twotheta_axis", "X Y Z", "axis of -twotheta (custom convention)"),
        ("-pix0_vector", "X Y Z", "position of the first pixel [m]"),
        ("-pix0_vector_mm", "X Y Z", "position of the first pixel [mm]"),
        ("-detector_rotx -detector_roty -detector_rotz", "DEG", "detector rotations about x, y, z [deg]"),
        ("-twotheta", "DEG", "detector swing about the two-theta axis [deg] (default 0); sample pivot"),
        ("-curved_det", "", "every pixel at the same distance from the sample"),
        ("-point_pixel", "", "solid angle 1/R^2 without obliquity"),
        ("-expt", "FILE", "DIALS experiment list (.expt): panels, beam, crystal, scan; flags override it"),
        ("-expt_index", "K", "which experiment of -expt (default 0); several panels: NAME_pKK.EXT files"),
        ("-detector_abs -detector_absorb", "UM|inf", "sensor attenuation depth [um] (default: the thickness)"),
        ("-detector_thick", "UM", "sensor thickness [um] (default 0)"),
        ("-detector_thicksteps -thicksteps", "N", "sensor layers (default 1)"),
        ("-roi", "XMIN XMAX YMIN YMAX", "render only this pixel window (inclusive)"),
        ("-img", "FILE", "read detector settings from an SMV header"),
        ("-mask", "FILE", "SMV mask: pixels that are 0 are skipped (its header is read too)"),
    ]),
    ("Sampling", [
        ("-phi", "DEG", "spindle angle at the start [deg] (default 0)"),
        ("-osc", "DEG", "spindle range [deg] (default 0)"),
        ("-phistep", "DEG", "spindle step [deg]"),
        ("-phisteps", "N", "spindle steps (default 1; 2 with -osc)"),
        ("-spindle_axis", "X Y Z", "spindle axis (default: the convention's)"),
        ("-phi_carryover", "", "reproduce the reference's phi = 0 carry-over (C parity)"),
        ("-oversample", "N", "sub-pixels per pixel edge (default: automatic from the crystal size)"),
        ("-oversample_thick -oversample_polar -oversample_omega", "", "recompute that factor per sub-pixel"),
    ]),
    ("Outputs", [
        ("-floatfile -floatimage", "FILE", "4-byte float image (default floatimage.bin)"),
        ("-intfile -intimage", "FILE", "SMV image, scaled (default intimage.img)"),
        ("-noisefile -noiseimage", "FILE", "SMV image with Poisson noise (default noiseimage.img)"),
        ("-pgmfile -pgmimage", "FILE", "8-bit PGM image (default image.pgm)"),
        ("-pngfile", "FILE", "8-bit PNG image (square-root grey scale)"),
        ("-nexusfile", "FILE", "NeXus/NXmx HDF5 file of the counts (noise image, else -intfile's; extra h5)"),
        ("-cbffile", "FILE", "Pilatus miniCBF file of the same counts (extra cbf)"),
        ("-scale", "X", "scale of -intfile (default: maximum to 55000)"),
        ("-pgmscale", "X", "scale of -pgmfile (default: automatic)"),
        ("-adc -adcoffset", "X", "offset added to SMV pixels (default 40)"),
        ("-seed", "N", "noise seed (default: from the clock)"),
        ("-nonoise", "", "no noise image"),
        ("-noise_jax", "", "draw the noise with jax.random instead of the reference's generator"),
        ("-nopgm", "", "no PGM image"),
        ("-noprogress -progress", "", "progress report off / on"),
        ("-printout", "", "print pixel values"),
        ("-printout_pixel", "FAST SLOW", "print the values of one pixel"),
        ("-trace_pixel", "SLOW FAST", "print every factor of one pixel"),
    ]),
    ("Execution (jaxbragg)", [
        ("-float32", "", "single-precision sample stage (about 2x faster)"),
        ("-tile", "N", "pixels per tile (default: from memory)"),
        ("-max_memory_gb", "GB", "memory to plan for (default: detected)"),
        ("-demo", "", "render a built-in example"),
        ("-h -help --help", "", "this list"),
        ("--version", "", "print the version"),
    ]),
]


def spellings():
    """Every flag named in the help."""
    return {name for _, entries in GROUPS for names, _, _ in entries for name in names.split()}


def text() -> str:
    """The help text."""
    lines = ["usage: jaxbragg -cell a b c al be ga -default_F F [-hkl F.hkl] [flags...]",
             "       jaxbragg -demo",
             "nanoBragg-compatible flags; lengths in mm unless stated, angles in degrees.", ""]
    for title, entries in GROUPS:
        lines.append(f"{title}:")
        for names, value, meaning in entries:
            left = f"  {names.replace(' ', ', ')}" + (f" {value}" if value else "")
            if len(left) > 34:
                lines.append(left)
                left = ""
            lines.append(f"{left:<34} {meaning}")
        lines.append("")
    return "\n".join(lines)
