"""Tasks behind one interface (:mod:`rmt.tasks.base`); importing this package registers them.

``task.type`` in a config names a registered task; see :func:`rmt.tasks.base.build_task`.
"""

from rmt.tasks import babilong, lm, retrieval  # noqa: F401  (register task.type=<name>)
from rmt.tasks.base import TASKS, EvalCell, EvalItem, Task, Verdict, build_task, register_task

__all__ = ["TASKS", "EvalCell", "EvalItem", "Task", "Verdict", "build_task", "register_task"]
