"""The CI steps beside the tests: scripts/typecheck.py (mypy against a baseline that only
shrinks) and scripts/check_deploy.py (check --deploy on the deployed configuration)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


typecheck = load("typecheck")
check_deploy = load("check_deploy")

OUTPUT = """\
portal/a.py:10: error: Incompatible return value type (got "str", expected "int")  [return-value]
portal/a.py:12: note: See https://mypy.readthedocs.io
portal/a.py:30: error: Incompatible return value type (got "str", expected "int")  [return-value]
integrations/b.py:3:5: error: "HttpRequest" has no attribute "htmx"  [attr-defined]
Found 3 errors in 2 files (checked 2 source files)
"""


def test_errors_are_keyed_without_line_numbers_and_counted():
    assert typecheck.parse(OUTPUT) == Counter(
        {
            'portal/a.py: [return-value] Incompatible return value type (got "str", expected '
            '"int")': 2,
            'integrations/b.py: [attr-defined] "HttpRequest" has no attribute "htmx"': 1,
        }
    )


@pytest.fixture
def baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(typecheck, "BASELINE", tmp_path / "mypy-baseline.txt")
    monkeypatch.setattr("sys.argv", ["typecheck.py"])
    monkeypatch.setattr(typecheck, "current_errors", lambda: typecheck.parse(OUTPUT))
    return typecheck.BASELINE


def test_the_check_passes_only_when_the_baseline_matches(baseline, capsys):
    typecheck.write_baseline(typecheck.parse(OUTPUT))
    assert typecheck.main() == 0
    lines = baseline.read_text().splitlines()
    baseline.write_text("\n".join(line for line in lines if "htmx" not in line) + "\n")
    assert typecheck.main() == 1  # a new error
    assert "new mypy error: integrations/b.py" in capsys.readouterr().out
    baseline.write_text("\n".join([*lines, "portal/c.py: [misc] gone"]) + "\n")
    assert typecheck.main() == 1  # a fixed error still listed: the baseline must shrink
    assert "fixed, remove it from mypy-baseline.txt: portal/c.py" in capsys.readouterr().out


def test_a_second_copy_of_a_known_error_is_new(baseline):
    errors = typecheck.parse(OUTPUT)
    errors.subtract({next(iter(errors)): 1})
    typecheck.write_baseline(+errors)
    assert typecheck.main() == 1


def test_the_deploy_check_sees_the_configmap_and_nothing_from_this_shell(monkeypatch):
    monkeypatch.setenv("DEBUG", "true")
    monkeypatch.setenv("SECURE_SSL_REDIRECT", "false")
    monkeypatch.setenv("DATABASE_URL", "postgres://x@127.0.0.1/x")
    env = check_deploy.production_environment()
    config = yaml.safe_load(check_deploy.CONFIGMAP.read_text())["data"]
    assert {k: env[k] for k in config} == {k: str(v) for k, v in config.items()}
    assert not {"DEBUG", "SECURE_SSL_REDIRECT"} & env.keys()
    # The database is the Deployments' (the app role on PostgreSQL), not this shell's.
    assert env["DATABASE_URL"].startswith("postgres://fleet_app:")
    assert env["DJANGO_SETTINGS_MODULE"] == "portal.settings"
    assert len(env["SECRET_KEY"]) >= 50
