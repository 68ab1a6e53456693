"""Types of the string symbols of ``lib/Kconfig.*`` (matrix, training, runtime, tracking menus).

Kconfig has no float or list type; :mod:`lib.config` reads this file (beside the Kconfig files whose symbols it
types) and validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from lib.config_types import FRACTION, IntList, LongOptions, Name, Text, Words

STRING_TYPES = {
    # lib/Kconfig.matrix
    "MATRIX_NAME": Name(),
    "MATRIX_DESCRIPTION": Text(may_be_empty=True),
    "MATRIX_EXCLUDE": Words(may_be_empty=True),
    "SEEDS": IntList(),
    # lib/Kconfig.training
    "LABEL_SMOOTHING": FRACTION,
    "DATA_DIR": Text(),
    # lib/Kconfig.runtime
    "DDP_TORCHRUN_ARGS": Text(may_be_empty=True),
    "RESULTS_DIR": Text(),
    "SLURM_PARTITION": Name(r"([A-Za-z0-9_][A-Za-z0-9._-]*(,[A-Za-z0-9_][A-Za-z0-9._-]*)*)?"),  # a,b: either
    "SLURM_ACCOUNT": Name(r"([A-Za-z0-9_][A-Za-z0-9._-]*)?"),
    "SLURM_QOS": Name(r"([A-Za-z0-9_][A-Za-z0-9._-]*)?"),
    "SLURM_CONSTRAINT": Text(may_be_empty=True),
    "SLURM_EXTRA_SBATCH": LongOptions(),
    # lib/Kconfig.tracking
    "TRACKER_PROJECT": Name(r"([A-Za-z0-9][A-Za-z0-9._-]*)?"),  # empty: derived (lib.tracking.project)
}
