"""Test set-up: keep Jupyter, matplotlib, HF and torch out of ~, and never use the network.

The variables are set at import time, before any test or papermill kernel starts, so the
kernels that execute the notebooks inherit them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="course-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)

for _var, _sub in {
    "MPLCONFIGDIR": "mpl", "IPYTHONDIR": "ipython", "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data", "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "HF_HOME": "hf", "TORCH_HOME": "torch", "COURSE_DATA": "data",
}.items():
    os.environ[_var] = str(_TMP / _sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["COURSE_OFFLINE"] = "1"
os.environ["COURSE_SMOKE"] = "1"  # notebooks always run in smoke mode under test
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def test_tmp() -> Path:
    """A temporary folder shared by the whole session (data, caches)."""
    return _TMP


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: tiny models train several times faster on one thread when
    other work shares the 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def executed_notebooks():
    """Executed copies of the course notebooks in ``build/test-notebooks/``.

    ``test_notebooks.py`` (which runs first) writes them; a copy that is missing or older than
    its source is executed here, in smoke mode, so the slide and page tests also run alone.
    """
    from course_lib.tooling.slides import ExecutedNotebooks

    return ExecutedNotebooks(REPO / "build" / "test-notebooks", mode="smoke")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's ``chromium``) driven by Playwright; skipped where it is missing,
    except on CI, which installs it (``.ci/run``)."""
    from course_lib.config import is_ci

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        missing = "chromium (apt-get install chromium)" if executable is None else "playwright (pip)"
        if is_ci():
            pytest.fail(f"{missing} is not installed; .ci/run and the dev extra install it")
        pytest.skip(f"{missing} is not installed")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=executable, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


class PageVisit:
    """One page opened offline: script errors and attempted network requests are recorded."""

    def __init__(self, browser, url: str, viewport=(1280, 720)):
        self.errors: list[str] = []
        self.remote: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.route("**/*", self._route)
        self.page.goto(url, wait_until="load")

    def _route(self, route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.remote.append(url)
            route.abort()

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def visit(browser):
    """Open pages offline: ``visit(url)`` returns a :class:`PageVisit`, closed after the test."""
    opened = []

    def open_page(url: str, viewport=(1280, 720)) -> PageVisit:
        opened.append(PageVisit(browser, url, viewport))
        return opened[-1]

    yield open_page
    for page in opened:
        page.close()
