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


def check(files: Dict[str, str]) -> None:
    """Before any work: the optional packages each requested format needs are importable and its path
    can be written (:func:`jaxbragg.io._common.check_output`).

    Raises:
      InputError: one line naming the flag (``-nexusfile: writing NeXus files needs h5py ...``).
    """
    from ..io import _common, cbf, nexus
    for kind, module in (("nexus", nexus), ("cbf", cbf)):
        if kind in files:
            try:
                module.require()
            except ImportError as e:
                raise InputError(f"{FLAGS[kind]}: {e}") from e
            try:
                _common.check_output(files[kind])
            except InputError as e:
                raise InputError(f"{FLAGS[kind]}: {e}") from e


def blobs(files: Dict[str, str], experiment, counts) -> Dict[str, bytes]:
    """``{kind: bytes}`` of the requested detector files, for ``counts`` [slow, fast] (uint16)."""
    out = {}
    if "nexus" in files:
        from ..io import nexus
        out["nexus"] = nexus.nexus_bytes(counts, nexus.setup_from_experiment(experiment))
    if "cbf" in files:
        from ..io import cbf
        out["cbf"] = cbf.cbf_bytes(counts, cbf.header_from_experiment(experiment))
    return out
