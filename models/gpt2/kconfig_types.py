"""Types of the string symbols of ``models/gpt2/Kconfig``.

Kconfig has no float type; :mod:`lib.config` reads this file (beside the Kconfig whose symbols it types) and
validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from lib.config_types import FRACTION, Float, FloatList, IntList, Text

STRING_TYPES = {
    "GPT2_DROPOUT": FRACTION,
    "MLP_RECIPROCAL_FRACTION": Float(0.0, 1.0, open_lo=True),
    "ATTN_KV_KEEP": FloatList(0.0, 1.0, open_lo=True),
    "GPT2_MLP_RATIOS": FloatList(0.0, open_lo=True),
    "GPT2_MLA_LATENTS": IntList(0, 1_000_000),
    "GPT2_REPORT_SAMPLE_PROMPT": Text(may_be_empty=True),
}
