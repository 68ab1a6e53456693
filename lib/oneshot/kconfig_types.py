"""Types of the string symbols of ``lib/oneshot/Kconfig`` (SparseGPT's dampening, the one-shot grid's sparsities
and N:M patterns).

Kconfig has no float type; :mod:`lib.config` reads this file (beside the Kconfig whose symbols it types) and
validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from lib.config_types import NON_NEGATIVE, FloatList, PatternList

STRING_TYPES = {
    "ONESHOT_SPARSEGPT_PERCDAMP": NON_NEGATIVE,
    "ONESHOT_SPARSITIES": FloatList(0.0, 1.0, open_lo=True, open_hi=True),
    "ONESHOT_PATTERNS": PatternList(),
}
