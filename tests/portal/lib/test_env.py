import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.lib.env import env_bool, env_int, env_list, env_secret, env_str


class TestEnvBool:
    def test_it_reads_true_and_false_spellings(self, monkeypatch):
        for raw, expected in [
            ("true", True),
            ("1", True),
            ("YES", True),
            ("off", False),
            ("0", False),
            ("False", False),
        ]:
            monkeypatch.setenv("FLAG", raw)
            assert env_bool("FLAG", not expected) is expected

    def test_it_uses_the_default_when_unset_or_blank(self, monkeypatch):
        monkeypatch.delenv("FLAG", raising=False)
        assert env_bool("FLAG", True) is True
        monkeypatch.setenv("FLAG", "  ")
        assert env_bool("FLAG", False) is False

    def test_it_refuses_anything_else_naming_the_variable(self, monkeypatch):
        monkeypatch.setenv("FLAG", "maybe")
        with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
            env_bool("FLAG", False)


class TestEnvInt:
    def test_it_parses_and_checks_bounds(self, monkeypatch):
        monkeypatch.setenv("N", "42")
        assert env_int("N", 1, minimum=1, maximum=100) == 42
        monkeypatch.setenv("N", "0")
        with pytest.raises(ImproperlyConfigured, match="at least 1"):
            env_int("N", 5, minimum=1)
        monkeypatch.setenv("N", "101")
        with pytest.raises(ImproperlyConfigured, match="at most 100"):
            env_int("N", 5, maximum=100)

    def test_it_refuses_non_numbers(self, monkeypatch):
        monkeypatch.setenv("N", "ten")
        with pytest.raises(ImproperlyConfigured, match="N must be a whole number"):
            env_int("N", 5)


def test_env_list_splits_and_trims(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.example , b.example,,")
    assert env_list("HOSTS") == ["a.example", "b.example"]
    monkeypatch.delenv("HOSTS")
    assert env_list("HOSTS", ["x"]) == ["x"]


def test_env_str_required(monkeypatch):
    monkeypatch.delenv("NAME", raising=False)
    with pytest.raises(ImproperlyConfigured, match="NAME must be set"):
        env_str("NAME", required=True)


class TestEnvSecret:
    def test_it_reads_the_variable(self, monkeypatch):
        monkeypatch.setenv("TOKEN", "s3cret")
        monkeypatch.delenv("TOKEN_FILE", raising=False)
        assert env_secret("TOKEN") == "s3cret"

    def test_it_reads_a_file_named_by_name_file(self, monkeypatch, tmp_path):
        path = tmp_path / "token"
        path.write_text("from-file\n")
        monkeypatch.delenv("TOKEN", raising=False)
        monkeypatch.setenv("TOKEN_FILE", str(path))
        assert env_secret("TOKEN") == "from-file"

    def test_it_refuses_both_and_never_shows_the_value(self, monkeypatch, tmp_path):
        path = tmp_path / "token"
        path.write_text("from-file")
        monkeypatch.setenv("TOKEN", "visible-value")
        monkeypatch.setenv("TOKEN_FILE", str(path))
        with pytest.raises(ImproperlyConfigured) as caught:
            env_secret("TOKEN")
        assert "not both" in str(caught.value)
        assert "visible-value" not in str(caught.value)

    def test_it_explains_an_unreadable_or_empty_file(self, monkeypatch, tmp_path):
        monkeypatch.delenv("TOKEN", raising=False)
        monkeypatch.setenv("TOKEN_FILE", str(tmp_path / "missing"))
        with pytest.raises(ImproperlyConfigured, match="cannot be read"):
            env_secret("TOKEN")
        empty = tmp_path / "empty"
        empty.write_text("")
        monkeypatch.setenv("TOKEN_FILE", str(empty))
        with pytest.raises(ImproperlyConfigured, match="empty file"):
            env_secret("TOKEN")

    def test_required(self, monkeypatch):
        monkeypatch.delenv("TOKEN", raising=False)
        monkeypatch.delenv("TOKEN_FILE", raising=False)
        with pytest.raises(ImproperlyConfigured, match=r"TOKEN \(or TOKEN_FILE\) must be set"):
            env_secret("TOKEN", required=True)
