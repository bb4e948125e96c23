"""Run the ```python blocks of one page, in order, in one namespace (what a reader pastes).

``python snippet_runner.py BLOCKS.json`` runs each ``[page, line, code]`` of the file,
compiled with the page as its file name and its own line numbers, so a traceback names
the page and the line where the block failed. ``tests/docs/test_snippets.py`` starts it
in a subprocess in an empty temporary directory.

The one thing it changes: a snippet that meta-trains for a realistic budget
(``fit(..., steps=500)``) would take minutes to an hour on a CPU, so when
``IAI_DOCS_MAX_STEPS`` is set, ``fit`` of both backends (``iai_prob.inference.fit`` and
``iai_prob.numpyro.fit``) runs at most that many steps with at most
``IAI_DOCS_MAX_TASKS`` tasks per step. Everything else runs as written. The cap is
applied when the training module is first imported, so that a snippet that sets
``XLA_FLAGS`` before importing JAX still does so first.
"""

import functools
import importlib.abc
import importlib.util
import json
import os
import sys

TRAINING_MODULES = ("iai_prob.inference.training", "iai_prob.numpyro.training")


def _capped(fit, max_steps: int, max_tasks: int):
    @functools.wraps(fit)
    def capped_fit(*args, steps=None, tasks_per_step=None, **kwargs):
        if steps is not None:
            kwargs["steps"] = min(steps, max_steps)
        else:
            kwargs["steps"] = max_steps
        if tasks_per_step is not None:
            kwargs["tasks_per_step"] = min(tasks_per_step, max_tasks)
        else:
            kwargs["tasks_per_step"] = max_tasks
        return fit(*args, **kwargs)

    return capped_fit


class _CapFit(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads a training module as usual, then replaces its ``fit`` by the capped one."""

    def __init__(self, max_steps: int, max_tasks: int):
        self.max_steps, self.max_tasks = max_steps, max_tasks

    def find_spec(self, fullname, path, target=None):
        if fullname not in TRAINING_MODULES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        self.loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.fit = _capped(module.fit, self.max_steps, self.max_tasks)


def main(path: str) -> None:
    if "IAI_DOCS_MAX_STEPS" in os.environ:
        max_tasks = int(os.environ.get("IAI_DOCS_MAX_TASKS", 4))
        sys.meta_path.insert(0, _CapFit(int(os.environ["IAI_DOCS_MAX_STEPS"]), max_tasks))
    with open(path) as blocks:
        namespace = {"__name__": "__main__"}
        for page, line, code in json.load(blocks):
            exec(compile("\n" * line + code, page, "exec"), namespace)


if __name__ == "__main__":
    main(sys.argv[1])
