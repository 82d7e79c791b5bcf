"""Settings are read as `settings.X` at call time; their defaults live once, in settings.py.

A `getattr(settings, "X", default)` repeats a default that settings.py already sets, and the two
drift apart (the inbox drain's idle wait said 1 s here and 0.5 s there).
"""

import ast
from pathlib import Path

from django.conf import settings


def test_no_module_reads_a_setting_with_a_default_of_its_own():
    base = Path(settings.BASE_DIR)
    offenders = []
    for path in [*base.glob("portal/**/*.py"), *base.glob("integrations/**/*.py")]:
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == "settings"
            ):
                offenders.append(f"{path.relative_to(base)}:{node.lineno}")
    assert offenders == []
