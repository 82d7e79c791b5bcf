"""The README must stay true: its role matrix and its settings table match the code."""

import re
from pathlib import Path

from django.conf import settings

from portal.access.roles import matrix_markdown

README = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")


def test_the_readme_prints_the_current_role_matrix():
    block = README.split("<!-- role-matrix:start -->")[1].split("<!-- role-matrix:end -->")[0]
    assert block.strip() == matrix_markdown()


def test_every_environment_variable_the_settings_read_is_documented():
    source = (Path(settings.BASE_DIR) / "portal" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'env_(?:str|bool|int|list|secret)\(\s*"([A-Z0-9_]+)"', source))
    names.discard("PORTAL_IGNORE_DOTENV")  # internal: the test settings' switch
    undocumented = {
        name for name in names if f"`{name}`" not in README and f"`{name}` (`_FILE`)" not in README
    }
    assert names and not undocumented, undocumented
