"""Former home of the paired-difference intervals; kept so `from analysis.bootstrap import ...` still works.

The intervals now live in `analysis.intervals` (Student-t by default, Welch for two samples, the bootstrap methods
selectable by name, the exact sign-flip p-value); see its docstring for why the default changed.

    python -c "from analysis.bootstrap import paired_mean_ci; print(paired_mean_ci([-6.0, -4.5, -7.2, -5.1]))"
"""
from analysis.intervals import (METHODS, TWO_SAMPLE_METHODS, Interval, difference_of_means_ci, paired_mean_ci,
                                register_method, sign_flip_p_value)

__all__ = ["METHODS", "TWO_SAMPLE_METHODS", "Interval", "difference_of_means_ci", "paired_mean_ci",
           "register_method", "sign_flip_p_value"]
