"""The experiments of `lieconv train|eval|study|run|data TASK`: one module per task.

    from lieconv_runtime.tasks import get_task
    task = get_task("springs")      # a lieconv_runtime.tasks.base.Task

Adding a task: write ``lieconv_runtime/tasks/<name>.py`` with a `Task` subclass instance ``TASK``
and add its name here.
"""

from __future__ import annotations

import importlib

from lieconv_runtime.tasks.base import Task, TaskError

__all__ = ["TASKS", "Task", "TaskError", "get_task"]

#: task name -> module (imported on first use)
TASKS = {"springs": "lieconv_runtime.tasks.springs",
         "rotmnist": "lieconv_runtime.tasks.rotmnist",
         "qm9": "lieconv_runtime.tasks.qm9",
         }


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).TASK
