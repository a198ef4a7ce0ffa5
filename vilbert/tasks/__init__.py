"""Tasks: the tasks file as typed configs, task types (head + loss), readers, metrics and writers.

    from vilbert.tasks import build_tasks
    tasks = build_tasks("1,6-7", "vlbert_tasks.yml")

Names are imported lazily: the data readers import `vilbert.tasks.config`, and the registry
imports the readers.
"""

_LAZY = {
    "TaskConfig": "vilbert.tasks.config",
    "TaskConfigError": "vilbert.tasks.config",
    "load_task_configs": "vilbert.tasks.config",
    "parse_task_ids": "vilbert.tasks.config",
    "select_tasks": "vilbert.tasks.config",
    "Task": "vilbert.tasks.registry",
    "TaskType": "vilbert.tasks.registry",
    "TASK_TYPES": "vilbert.tasks.registry",
    "build_task": "vilbert.tasks.registry",
    "build_tasks": "vilbert.tasks.registry",
    "register_reader": "vilbert.tasks.registry",
    "get_reader": "vilbert.tasks.registry",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vilbert.tasks' has no attribute {name!r}")
