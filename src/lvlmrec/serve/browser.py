"""Run the app on a loopback port and look at its page with headless Chromium.

Used by the browser test and by `docs/make_serve_screenshot.py`. It drives Debian's
`chromium` and `chromium-driver` packages through Selenium, with the driver's path given
explicitly and Selenium Manager kept offline, so nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")

#: a script for `execute_script`: are at least n images matching a selector loaded?
IMAGES_LOADED = """
    const imgs = [...document.querySelectorAll(arguments[0])];
    return imgs.length >= arguments[1] && imgs.every(i => i.complete && i.naturalWidth > 0);
"""


def browser_available() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free port; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting")
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def headless_chromium(profile_dir: str | Path, width: int = 1280,
                      height: int = 1000) -> Iterator:
    """A Selenium driver for headless Chromium with a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}",
                 f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
