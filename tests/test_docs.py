"""The documentation must stay true: the role matrix and the settings table match the code, and
nothing points outside the repository."""

import re
import subprocess
from pathlib import Path

from django.conf import settings

from portal.access.roles import matrix_markdown

DOCS = Path(settings.BASE_DIR) / "docs"


def test_the_security_page_prints_the_current_role_matrix():
    text = (DOCS / "security.md").read_text(encoding="utf-8")
    block = text.split("<!-- role-matrix:start -->")[1].split("<!-- role-matrix:end -->")[0]
    assert block.strip() == matrix_markdown()


def test_every_environment_variable_the_settings_read_is_documented():
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    source = (Path(settings.BASE_DIR) / "portal" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'env_(?:str|bool|int|list|secret)\(\s*"([A-Z0-9_]+)"', source))
    names.discard("PORTAL_IGNORE_DOTENV")  # internal: the test settings' switch
    undocumented = {
        name
        for name in names
        if f"`{name}`" not in reference and f"`{name}` (`_FILE`)" not in reference
    }
    assert names and not undocumented, undocumented


def test_the_readme_links_only_to_files_that_exist():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    missing = [t for t in targets if not (Path(settings.BASE_DIR) / t).exists()]
    assert targets and not missing, missing


def test_nothing_refers_to_notes_outside_the_repository():
    # A maintainer reads the repository alone: section marks and tracker item numbers of notes
    # that are not in it cannot be followed. Graph facts cite Microsoft Learn pages by title.
    # The names are spelled in parts so that this guard does not find itself.
    notes = "|".join(
        "-".join(parts)
        for parts in (
            ("graph", "reference"),
            ("reliability", "notes"),
            ("stack", "notes"),
            ("house", "style"),
            ("console", "anchors"),
        )
    )
    section_mark = chr(0xA7)
    pattern = rf"{section_mark}|\.\./shared|{notes}|[Ii]ssue [0-9]+ item"
    grep = subprocess.run(
        ["git", "grep", "-n", "-I", "-E", pattern],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert grep.returncode == 1, grep.stdout or grep.stderr  # 1: nothing found; 2: an error
