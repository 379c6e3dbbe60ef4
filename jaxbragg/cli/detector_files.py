"""``-nexusfile FILE`` and ``-cbffile FILE``: the image as a detector file that DIALS and XDS read.

Content: the counts a detector would record, the noise image (``-noisefile``'s counts: Poisson deviates
plus ``-adc``, clipped to 65535) when noise is on (the default), else the ``-intfile`` image
(``floor(I * scale + adc + 1/2)`` clipped to [0, 65535]). Metadata come from the command line's resolved
:class:`jaxbragg.Experiment` (:func:`jaxbragg.io.nexus.setup_from_experiment`,
:func:`jaxbragg.io.cbf.header_from_experiment`): geometry, wavelength, spindle start and oscillation.
Both files are built in memory and written with the other outputs, all or none.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

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


def files_per_output(kind: str, panels: int) -> int:
    """How many files an output kind writes for a detector of ``panels`` panels: one NeXus file holds
    every panel as a module; every other kind writes one file per panel
    (:func:`jaxbragg.io.naming.panel_path`)."""
    return 1 if kind == "nexus" else panels


def blobs(files: Dict[str, str], setup, counts: List[np.ndarray]) -> List[Tuple[str, str, bytes]]:
    """``[(kind, path, bytes)]`` of the requested detector files for the per-panel ``counts`` [slow, fast]
    (one array per panel of ``setup``'s detector): one CBF per panel (``NAME_pNN.cbf`` with several, each
    with its panel's header), one NeXus file with every panel a module, their counts placed in one data
    array at the modules' ``data_origin`` (:func:`jaxbragg.io.nexus.stack_modules`)."""
    from ..io import cbf, nexus
    from ..io.naming import panel_path
    setups = setup.panel_setups or [setup]
    out = []
    if "cbf" in files:
        for k, (one, image) in enumerate(zip(setups, counts)):
            out.append(("cbf", panel_path(files["cbf"], k, len(setups)),
                        cbf.cbf_bytes(image, _metadata("cbf", one.experiment))))
    if "nexus" in files:
        meta = _metadata("nexus", setup.experiment)
        data = np.zeros(meta.data_shape(), dtype=np.asarray(counts[0]).dtype)
        for m, image in zip(meta.modules, counts):
            (s0, f0), (ns, nf) = m.data_origin, m.shape
            data[s0:s0 + ns, f0:f0 + nf] = image
        out.append(("nexus", files["nexus"], nexus.nexus_bytes(data, meta)))
    return out
