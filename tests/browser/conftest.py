from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import PERSONA_PASSWORD

# The Graph fixtures (emulator, settings pointing at it, webhook receiver, a monitored user),
# shared with tests/integrations/microsoft, for the browser tests that drive Graph pages.
from tests.integrations.microsoft.conftest import (  # noqa: F401
    _fresh_process_state,
    drain,
    emulator,
    emulator_user,
    graph_emulator,
    graph_settings,
    monitored,
    q_sync,
    webhook_settings,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

# Runs in every page before its own scripts: a CSP violation becomes a console error, which the
# fixture below turns into a test failure (chromium also logs "Refused to …", but not for all).
_REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
                + ` at ${event.sourceFile || document.location.href}:${event.lineNumber}`);
});
"""


@dataclass
class BrowserProblems:
    """What a user would see go wrong: console errors, CSP violations, failed requests."""

    found: list[str] = field(default_factory=list)
    allowed: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)

    def allow(self, status: int, url: str) -> None:
        """A test that provokes an error answer on purpose names it (status, URL regex)."""
        self.allowed.append((status, re.compile(url)))

    def _is_allowed(self, status: int, url: str) -> bool:
        return any(status == s and pattern.search(url) for s, pattern in self.allowed)

    def on_console(self, message) -> None:
        text = message.text
        if "Failed to load resource" in text:
            return  # the response itself is checked (and may be allowed) in on_response
        if message.type == "error" or "Refused to" in text:
            self.found.append(f"console {message.type}: {text} ({message.location.get('url')})")

    def on_page_error(self, error) -> None:
        self.found.append(f"uncaught exception: {error.error}")

    def on_request_failed(self, request) -> None:
        failure = request.failure or ""
        # A navigation cancels the page's requests still in flight: not a failure the user sees.
        if "ERR_ABORTED" not in failure:
            self.found.append(f"request failed: {request.method} {request.url}: {failure}")

    def on_response(self, response) -> None:
        if response.status >= 400 and not self._is_allowed(response.status, response.url):
            self.found.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@pytest.fixture(autouse=True)
def browser_problems(context):
    """Every browser test fails on a console error, a CSP violation or a failed request of any
    page it opens (allow an intended error answer with `browser_problems.allow(status, url)`)."""
    problems = BrowserProblems()
    context.add_init_script(_REPORT_CSP_VIOLATIONS)
    context.on("console", problems.on_console)
    context.on("weberror", problems.on_page_error)
    context.on("requestfailed", problems.on_request_failed)
    context.on("response", problems.on_response)
    yield problems
    if problems.found:
        pytest.fail("The browser saw problems:\n  " + "\n  ".join(problems.found), pytrace=False)


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot under test-artifacts/screenshots/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def sign_in(page, live_server):
    def do(username: str, password: str = PERSONA_PASSWORD) -> None:
        page.goto(live_server.url + "/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()

    return do


def set_visibility(page, state: str) -> None:
    """Emulate the tab being hidden or shown (headless chromium's tabs are always visible):
    document.visibilityState answers `state` and the page gets its visibilitychange event."""
    page.evaluate(
        """(state) => {
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
        Object.defineProperty(document, "hidden", {configurable: true,
                                                   get: () => state !== "visible"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""",
        state,
    )


def open_nav_item(page, label: str) -> None:
    """Go to a page through the main navigation as a person would: on a phone open the Menu,
    then open the page's group (unless it is a plain link) and click the page."""
    menu = page.locator("a.menu-toggle")
    nav = page.get_by_role("navigation", name="Main")
    if menu.is_visible() and not nav.is_visible():
        menu.click()
    link = nav.locator("a", has_text=re.compile(f"^{re.escape(label)}$"))
    if not link.is_visible():
        link.locator("xpath=ancestor::details[1]/summary").click()
    link.click()
    page.wait_for_load_state()


# WCAG 2 contrast of every visible text against the background it is drawn on (backgrounds of
# the element and its ancestors composited): 4.5:1, or 3:1 for large text (24 px, or 18.66 px
# bold). Disabled controls are exempt, as in WCAG.
_LOW_CONTRAST = """() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1});
  const lum = (c) => ["r", "g", "b"].map((k) => {
    const v = c[k] / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }).reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.unshift(e);
    let bg = {r: 255, g: 255, b: 255, a: 1};
    for (const e of chain) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) bg = over(c, bg);
    }
    return bg;
  };
  const found = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg, [disabled], [aria-hidden=true]")) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const rect = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (!rect.width || !rect.height || style.visibility === "hidden") continue;
    const bg = background(el);
    const fg = over(parse(style.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      found.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim()
        .slice(0, 30)}" ${ratio.toFixed(2)}:1 (${style.color} on rgb(${Math.round(bg.r)},`
        + `${Math.round(bg.g)},${Math.round(bg.b)}))`);
    }
  }
  return found.slice(0, 8);
}"""


def low_contrast_texts(page) -> list[str]:
    """Texts of the page below WCAG AA contrast (empty: all pass)."""
    return page.evaluate(_LOW_CONTRAST)
