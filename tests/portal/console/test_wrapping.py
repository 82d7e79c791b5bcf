"""The |breakable filter (portal/console/templatetags/wrapping.py)."""

from portal.console.templatetags.wrapping import breakable


def test_a_upn_may_wrap_at_its_dots_and_at_sign():
    assert breakable("ada.lovelace@fleet.example") == ("ada.<wbr>lovelace@<wbr>fleet.<wbr>example")


def test_it_escapes_before_it_marks_safe():
    assert breakable('<img src=x onerror="a.b()">') == (
        "&lt;img src=x onerror=&quot;a.<wbr>b()&quot;&gt;"
    )
