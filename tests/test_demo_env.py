"""scripts/write_demo_env.py: the demo .env, and the address `make run` was given persisted in
it, so that `manage.py verify_integration` in another terminal checks the running portal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dotenv import dotenv_values

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "write_demo_env.py"


def load():
    spec = importlib.util.spec_from_file_location("write_demo_env", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_demo_env = load()


def test_the_first_run_writes_a_demo_env_with_the_port_it_was_given(tmp_path):
    target = tmp_path / ".env"
    write_demo_env.main(target, {"PORT": "8100"})
    values = dotenv_values(target)  # what portal/settings.py loads
    assert values["DEBUG"] == "true" and len(values["SECRET_KEY"]) >= 50
    assert values["PORT"] == "8100"
    assert "PUBLIC_BASE_URL" not in values  # the settings derive it from PORT
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_later_run_with_another_address_updates_only_those_lines(tmp_path, capsys):
    target = tmp_path / ".env"
    write_demo_env.main(target, {"PORT": "8100"})
    before = dotenv_values(target)
    write_demo_env.main(target, {"PORT": "8200", "PUBLIC_BASE_URL": "https://portal.example.test"})
    after = dotenv_values(target)
    assert (after["PORT"], after["PUBLIC_BASE_URL"]) == ("8200", "https://portal.example.test")
    assert after["SECRET_KEY"] == before["SECRET_KEY"]  # never regenerated
    assert list(target.read_text().splitlines()).count("PORT=8200") == 1
    assert "PORT=8200 written to .env" in capsys.readouterr().out


def test_without_an_address_the_env_is_left_as_it_is(tmp_path):
    target = tmp_path / ".env"
    target.write_text("# a real tenant's .env\nPORT=9000\nMICROSOFT_TENANT_ID=t\n")
    before = target.read_text()
    write_demo_env.main(target, {})
    write_demo_env.main(target, {"PORT": "9000"})  # the same value: nothing to write
    assert target.read_text() == before
