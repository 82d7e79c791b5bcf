import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.lib.dburl import parse_database_url


def test_it_maps_a_postgres_url_with_escapes_and_options():
    config = parse_database_url(
        "postgres://u%40x:p%3Ass@127.0.0.1:55432/fleet?sslmode=require", conn_max_age=60
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("fleet", "u@x", "p:ss")
    assert (config["HOST"], config["PORT"]) == ("127.0.0.1", "55432")
    assert config["OPTIONS"] == {"sslmode": "require"}
    assert config["CONN_MAX_AGE"] == 60 and config["CONN_HEALTH_CHECKS"] is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@h/db", "must start with postgres"),
        ("postgres://x@h/", "names no database"),
        ("postgres://x@h:port/db", "port that is not a number"),
    ],
)
def test_it_refuses_bad_urls(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_database_url(url, conn_max_age=60)
