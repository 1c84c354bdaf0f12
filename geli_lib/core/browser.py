"""Open built HTML pages in a real headless browser and report what is broken.

:func:`check_html_pages` serves a folder (a built Jupyter Book, a figure
gallery) on a loopback port, opens each page in headless Debian Chromium via
Selenium, and records per page: the title, the HTTP status, how many ``<img>``
there are and which failed to load, and the browser console's SEVERE entries
(failed requests, uncaught JS errors).

Fully offline and deterministic:

- the driver is ``/usr/bin/chromedriver`` given explicitly to ``Service``, so
  Selenium Manager (which would try to download a driver) is never run;
  ``SE_OFFLINE=true`` is set as well;
- Chromium runs with background networking, component updates, sync and QUIC
  off, a fresh throw-away profile, and a host resolver that resolves nothing
  but the loopback server, so a page that points at the internet fails at once
  (and is reported) instead of waiting on DNS.

Install the browser with ``apt-get install chromium chromium-driver`` (Debian).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1280,1024",
    # Nothing but the loopback server resolves: no page can reach the internet.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

# Runs in the page (async script): make lazy images load, wait for every <img>
# to settle, then ask each to decode. decode() rejects for a missing or corrupt
# image and resolves for a good one, SVGs without intrinsic size included.
_IMAGES_JS = r"""
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
const settle = i => i.complete ? Promise.resolve() : new Promise(r => {
  i.addEventListener('load', r, {once: true}); i.addEventListener('error', r, {once: true});
});
const timeout = new Promise(r => setTimeout(r, arguments[0]));
Promise.race([Promise.all(imgs.map(settle)), timeout]).then(() =>
  Promise.allSettled(imgs.map(i => i.decode()))
).then(results => done(imgs.map((i, k) => ({
  src: i.getAttribute('src') || '',
  url: i.currentSrc || i.src || '',
  complete: i.complete,
  naturalWidth: i.naturalWidth,
  decoded: results[k].status === 'fulfilled',
}))));
"""

_NAV_STATUS_JS = r"""
const nav = performance.getEntriesByType('navigation')[0];
return nav ? (nav.responseStatus || null) : null;
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, records (path, status) of every request, logs nothing."""

    def __init__(self, *args: Any, record: list, **kwargs: Any) -> None:
        self._record = record
        super().__init__(*args, **kwargs)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        try:
            self._record.append((self.path, int(code)))
        except (TypeError, ValueError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve_dir(html_dir: Path) -> Iterator[tuple[str, list]]:
    """Serve ``html_dir`` on ``127.0.0.1`` (a free port) in a thread; yield (base URL, request log)."""
    record: list[tuple[str, int]] = []
    handler = functools.partial(_QuietHandler, directory=str(html_dir), record=record)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="geli-html-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def chromium_available() -> bool:
    """Whether Debian's Chromium and its driver are installed where this module expects them."""
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


@contextlib.contextmanager
def headless_chromium(page_load_timeout: float = 30.0) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile; Selenium Manager is never run."""
    os.environ["SE_OFFLINE"] = "true"
    # lazy: selenium is optional (the browser checks of tests and CI)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not chromium_available():
        raise FileNotFoundError(f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="geli-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(page_load_timeout)
        driver.set_script_timeout(page_load_timeout)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _find_pages(html_dir: Path) -> list[str]:
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html"))


def _page_problems(page: str, info: dict, console_errors_fail: bool) -> list[str]:
    problems = []
    if not info["ok"]:
        problems.append(f"{page}: HTTP status {info['status']}")
    for img in info["broken_images"]:
        problems.append(f"{page}: image failed to load: {img}")
    if info.get("error"):
        problems.append(f"{page}: {info['error']}")
    if console_errors_fail:
        problems += [f"{page}: console: {m}" for m in info["console_errors"]]
    return problems


def _count_when_present(driver: Any, selector: str, timeout_s: float) -> int:
    """Elements matching ``selector``, polled until some appear or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        n = int(driver.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))
        if n or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def check_html_pages(
    html_dir: str | Path,
    pages: list[str] | None = None,
    strict: bool = False,
    console_errors_fail: bool = False,
    image_timeout_s: float = 10.0,
    count_selectors: dict[str, str] | None = None,
) -> dict:
    """Open each page of ``html_dir`` in headless Chromium and report what is broken.

    ``pages`` are paths relative to ``html_dir`` (default: every ``*.html``
    under it). Returns::

        {"base_url": str, "browser": str, "ok": bool, "problems": [str, ...],
         "pages": {page: {"url", "title", "status", "ok", "n_images",
                          "n_broken_images", "broken_images": [src, ...],
                          "console_errors": [str, ...], "error": str | None}}}

    A page is ``ok`` when its HTTP status is 2xx. ``problems`` lists pages
    that are not ok, every image that failed to load (by its ``src``), and, when
    ``console_errors_fail``, every SEVERE console entry (off by default: a book
    that loads scripts from a CDN logs errors offline). ``count_selectors``
    (name -> CSS selector) adds ``counts[name]`` per page: how many elements
    match, waiting up to ``image_timeout_s`` for script-rendered content (e.g.
    typeset math) to appear. With ``strict=True`` an
    :class:`AssertionError` listing the problems is raised instead of returning.
    """
    html_dir = Path(html_dir).resolve()
    if not html_dir.is_dir():
        raise FileNotFoundError(f"not a folder: {html_dir}")
    pages = _find_pages(html_dir) if pages is None else [p.lstrip("/") for p in pages]
    report: dict[str, Any] = {"html_dir": str(html_dir), "pages": {}, "problems": []}
    with serve_dir(html_dir) as (base, requests), headless_chromium() as driver:
        report["base_url"] = base
        report["browser"] = driver.capabilities.get("browserVersion", "")
        for page in pages:
            url = base + page
            info: dict[str, Any] = {
                "url": url,
                "title": None,
                "status": None,
                "ok": False,
                "n_images": 0,
                "n_broken_images": 0,
                "broken_images": [],
                "console_errors": [],
                "error": None,
            }
            seen = len(requests)
            try:
                driver.get_log("browser")  # drop late entries of the previous page
                driver.get(url)
                info["title"] = driver.title
                status = driver.execute_script(_NAV_STATUS_JS)
                if not status:  # fall back on what the server answered for this page
                    hits = [c for p, c in requests[seen:] if p.split("?")[0].lstrip("/") == page]
                    status = hits[0] if hits else None
                info["status"] = status
                info["ok"] = status is not None and 200 <= int(status) < 300
                images = driver.execute_async_script(_IMAGES_JS, int(image_timeout_s * 1000))
                broken = [i["src"] or i["url"] or "(no src)" for i in images if not i["decoded"]]
                info.update(n_images=len(images), n_broken_images=len(broken), broken_images=broken)
                info["counts"] = {
                    name: _count_when_present(driver, sel, image_timeout_s)
                    for name, sel in (count_selectors or {}).items()
                }
                # The browser asks every site for /favicon.ico on its own: not the page's fault.
                info["console_errors"] = [
                    e.get("message", "")
                    for e in driver.get_log("browser")
                    if e.get("level") == "SEVERE" and not e.get("message", "").startswith(base + "favicon.ico ")
                ]
            except Exception as err:  # a page that cannot be opened is a finding, not a crash
                info["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            report["pages"][page] = info
            report["problems"] += _page_problems(page, info, console_errors_fail)
    report["ok"] = not report["problems"]
    if strict and report["problems"]:
        raise AssertionError(
            f"{len(report['problems'])} problem(s) in {html_dir}:\n  " + "\n  ".join(report["problems"])
        )
    return report
