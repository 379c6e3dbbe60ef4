"""``-nexusfile FILE`` and ``-cbffile FILE``: the image as a detector file that DIALS and XDS read.

Content: the counts a detector would record, the noise image (``-noisefile``'s counts: Poisson deviates
plus ``-adc``, clipped to 65535) when noise is on (the default), else the ``-intfile`` image
(``floor(I * scale + adc + 1/2)`` clipped to [0, 65535]). Metadata come from the command line's resolved
:class:`jaxbragg.Experiment` (:func:`jaxbragg.io.nexus.setup_from_experiment`,
:func:`jaxbragg.io.cbf.header_from_experiment`): geometry, wavelength, spindle start and oscillation.
Both files are built in memory and written with the other outputs, all or none.
"""
from __future__ import annotations

from typing import Dict

from ..errors import InputError

#: Output kind -> the flag that names it.
FLAGS = {"nexus": "-nexusfile", "cbf": "-cbffile"}


def check(files: Dict[str, str], experiment) -> None:
    """Before any work: the optional packages each requested format needs are importable, its path can
    be written (:func:`jaxbragg.io._common.check_output`) and its metadata can be built.

    Raises:
      InputError: one line naming the flag (``-nexusfile: writing NeXus files needs h5py ...``).
    """
    from ..io import _common
    for kind in FLAGS:
        if kind in files:
            module = _module(kind)
            try:
                module.require()
                _common.check_output(files[kind])
                _metadata(kind, experiment)
            except (ImportError, InputError, ValueError) as e:
                raise InputError(f"{FLAGS[kind]}: {e}") from e


def _module(kind):
    from ..io import cbf, nexus
    return nexus if kind == "nexus" else cbf


def _metadata(kind, experiment):
    from ..io import cbf, nexus
    if kind == "nexus":
        return nexus.setup_from_experiment(experiment)
    return cbf.header_from_experiment(experiment)


def blobs(files: Dict[str, str], experiment, counts) -> Dict[str, bytes]:
    """``{kind: bytes}`` of the requested detector files, for ``counts`` [slow, fast] (uint16)."""
    from ..io import cbf, nexus
    out = {}
    if "nexus" in files:
        out["nexus"] = nexus.nexus_bytes(counts, _metadata("nexus", experiment))
    if "cbf" in files:
        out["cbf"] = cbf.cbf_bytes(counts, _metadata("cbf", experiment))
    return out
