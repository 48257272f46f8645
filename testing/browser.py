"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium.

The flags keep the browser off the network: on these machines only loopback is reachable, and
without ``--disable-background-networking`` and friends Chromium stalls on its own background
requests. Each browser gets a fresh profile directory.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["CHROME_FLAGS", "chrome", "start_chrome"]

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def _find(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (name if Path(name).exists() else None)
        if found:
            return found
    raise RuntimeError(
        f"none of {', '.join(names)} is installed; install Debian's chromium and chromium-driver "
        "(apt-get install chromium chromium-driver, as .ci/run does)"
    )


def start_chrome(profile: Path) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find("chromium", "/usr/bin/chromium")
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(_find("chromedriver", "/usr/bin/chromedriver")))
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def chrome() -> Iterator[object]:
    """One headless Chromium per test module, with a fresh profile; quit afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="mlsvc-chrome-"))
    driver = start_chrome(profile)
    try:
        yield driver
    finally:
        driver.quit()  # type: ignore[attr-defined]
        shutil.rmtree(profile, ignore_errors=True)
