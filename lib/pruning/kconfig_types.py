"""Types of the string symbols of ``lib/pruning/Kconfig`` (target sparsities, band widths).

Kconfig has no float or list type; :mod:`lib.config` reads this file (beside the Kconfig whose symbols it types)
and validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from lib.config_types import FloatList, IntList

STRING_TYPES = {
    "TARGET_SPARSITIES": FloatList(0.0, 1.0, open_lo=True, open_hi=True),
    "BANDED_FC1_BANDWIDTHS": IntList(0, 1_000_000),
    "BANDED_FC2_BANDWIDTHS": IntList(0, 1_000_000),
}
