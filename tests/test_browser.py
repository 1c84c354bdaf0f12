"""geli_lib.core.browser: a real headless Chromium on a tiny static site (no mocks)."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import pytest

from geli_lib.core import browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(browser.CHROMIUM).is_file(),
        reason=f"{browser.CHROMIUM} is absent (apt-get install chromium chromium-driver)",
    ),
]


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG, written byte by byte."""
    raw = b"".join(b"\x00" + b"\x20\x80\xc0" * width for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "good.png").write_bytes(_png(8, 6))
    (tmp_path / "img" / "logo.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4"/></svg>'
    )
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><title>Good page</title></head><body>"
        '<p><img src="img/good.png" alt="ok"> <img src="img/logo.svg" alt="svg"></p>'
        '<img loading="lazy" src="img/good.png" style="margin-top:4000px" alt="lazy, far down">'
        "</body></html>"
    )
    (tmp_path / "chapter").mkdir()
    (tmp_path / "chapter" / "broken.html").write_text(
        "<!doctype html><html><head><title>Broken page</title></head><body>"
        '<img src="../img/good.png"><img src="../img/missing.png">'
        "<script>notDefinedAnywhere()</script>"
        "</body></html>"
    )
    return tmp_path


def test_good_page_passes_and_broken_image_is_reported(site, caplog):
    caplog.set_level(logging.DEBUG, logger="selenium.webdriver.common.driver_finder")
    report = browser.check_html_pages(site)

    # Selenium Manager (which would go to the network) was never run
    assert "Skipping Selenium Manager" in caplog.text
    assert report["base_url"].startswith("http://127.0.0.1:")
    assert report["browser"]
    assert sorted(report["pages"]) == ["chapter/broken.html", "index.html"]

    good = report["pages"]["index.html"]
    assert good["title"] == "Good page"
    assert good["status"] == 200 and good["ok"]
    assert good["n_images"] == 3 and good["n_broken_images"] == 0
    assert good["console_errors"] == []

    bad = report["pages"]["chapter/broken.html"]
    assert bad["title"] == "Broken page" and bad["ok"]
    assert bad["n_images"] == 2
    assert bad["broken_images"] == ["../img/missing.png"]
    assert any("missing.png" in m for m in bad["console_errors"])
    assert any("notDefinedAnywhere" in m for m in bad["console_errors"])

    assert not report["ok"]
    assert report["problems"] == ["chapter/broken.html: image failed to load: ../img/missing.png"]


def test_strict_raises_listing_the_problems(site):
    assert browser.check_html_pages(site, pages=["index.html"], strict=True)["ok"]
    with pytest.raises(AssertionError) as err:
        browser.check_html_pages(site, pages=["index.html", "chapter/broken.html", "nowhere.html"], strict=True)
    msg = str(err.value)
    assert "chapter/broken.html: image failed to load: ../img/missing.png" in msg
    assert "nowhere.html: HTTP status 404" in msg
    assert "index.html:" not in msg


def test_console_errors_can_fail(site):
    report = browser.check_html_pages(site, pages=["chapter/broken.html"], console_errors_fail=True)
    assert any("console:" in p and "notDefinedAnywhere" in p for p in report["problems"])
