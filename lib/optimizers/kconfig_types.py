"""Types of the string symbols of ``lib/optimizers/Kconfig`` (learning rates, weight decays, betas, schedules).

Kconfig has no float type; :mod:`lib.config` reads this file (beside the Kconfig whose symbols it types) and
validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from lib.config_types import FRACTION, NON_NEGATIVE, POSITIVE, Float, FloatList, Words

STRING_TYPES = {
    "SGD_LR": POSITIVE,
    "SGD_MOMENTUM": FRACTION,
    "SGD_WEIGHT_DECAY": NON_NEGATIVE,
    "ADAM_LR": POSITIVE,
    "ADAM_WEIGHT_DECAY": NON_NEGATIVE,
    "ADAMW_LR": POSITIVE,
    "ADAMW_WEIGHT_DECAY": NON_NEGATIVE,
    "ADAMWADV_LR": POSITIVE,
    "ADAMWADV_WEIGHT_DECAY": NON_NEGATIVE,
    "ADAMWADV_CLIP_NORM": NON_NEGATIVE,
    "ADAMWSPAM_LR": POSITIVE,
    "ADAMWSPAM_WEIGHT_DECAY": NON_NEGATIVE,
    "SPAM_THRESHOLD": NON_NEGATIVE,
    "ADAMWPRUNE_VARIANTS": Words(),  # each a lib.pruning.state.VARIANTS name, checked by the matrix
    "ADAMWPRUNE_BUDGET_SCALE": Float(1.0),
    "ADAMWPRUNE_BUDGET_SCALE_LONG": Float(1.0),
    "ADAMWPRUNE_WEIGHT_ATTENTION": POSITIVE,
    "ADAMWPRUNE_WEIGHT_MLP": POSITIVE,
    "ADAMWPRUNE_WEIGHT_COUPLING": POSITIVE,
    "MUON_LR": POSITIVE,
    "MUON_WEIGHT_DECAY": NON_NEGATIVE,
    "MUON_MOMENTUM": FRACTION,
    "ADAM_BETA1": FRACTION,
    "ADAM_BETA2": FRACTION,
    "ADAM_EPS": POSITIVE,
    "GRAD_CLIP_NORM": NON_NEGATIVE,
    "LEARNING_RATES": FloatList(0.0, open_lo=True, may_be_empty=True),
    "LR_ONECYCLE_DIV": Float(1.0),
    "LR_STEP_GAMMA": Float(0.0, 1.0, open_lo=True),
    "LR_MIN_RATIO": Float(0.0, 1.0),
}
