"""The system's headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium: how the report
test checks pages in a real browser and how ``scripts/screenshot_report.py`` takes the docs' screenshots.

Nothing is downloaded: selenium is pointed at ``/usr/bin/chromedriver`` (never its driver manager), and the flags
keep Chromium off the network (no component updates, sync, QUIC or background fetches).
selenium is a dev extra (``pip install -e '.[dev]'``); this module is imported only where a browser is wanted.

Example::

    with chromium() as driver:
        driver.get(Path("runs/demo/report.html").resolve().as_uri())
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Optional

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
BINARIES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple, name: str) -> Optional[str]:
    for p in paths:
        if shutil.which(p):
            return p
    return shutil.which(name)


def why_unavailable() -> Optional[str]:
    """None when a headless Chromium can be driven here, else what is missing and how to install it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _first(BINARIES, "chromium") is None or _first(DRIVERS, "chromedriver") is None:
        return "no chromium / chromedriver (Debian: apt-get install -y chromium chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A selenium Chrome driver on the system Chromium, headless, with the browser console log kept; quit after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = why_unavailable()
    if missing:
        raise RuntimeError(missing)
    with tempfile.TemporaryDirectory(prefix="prunekit-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = _first(BINARIES, "chromium")
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=_first(DRIVERS, "chromedriver")))
        try:
            yield driver
        finally:
            driver.quit()


def screenshot(driver: Any, url: str, path: str, width: int = 1200) -> None:
    """The whole page at ``url`` (not just the window) as a PNG at ``path``."""
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 120)
    driver.save_screenshot(path)
