"""Exercise checkers, one module per notebook (`nb01`, `nb02`, ...).

Each module exposes `Exercise` objects and `check_<name>` shortcuts; see `framework.py`.
"""

from radixlab.exercises.framework import Build, Case, CheckResult, Exercise

__all__ = ["Build", "Case", "CheckResult", "Exercise"]
