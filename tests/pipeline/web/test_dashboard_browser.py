"""The dashboard in a real headless browser (Debian's chromium + chromedriver, via selenium).

1. Synthetic database, live: a second process appends progress rows while the page is
   open; the page must show the run, its counts moving, the error rows (one named like an
   HTML tag, which must stay text), the Ray dashboard link, and drawn charts, with no
   console errors.
2. Database written by a real `python -m jobs.fingerprint` run over a small synthesized
   library with one broken file named like an HTML tag (skipped until jobs.fingerprint exists).

Set CHROMARAY_SCREENSHOT_DIR to keep PNG screenshots of the page.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.synth import good_library
from tests.pipeline.web.test_dashboard import REPO, SCRIPT_REASON, XSS_NAME, DashboardServer, populate

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver "
                                       "(apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1700",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser):
    """The shared browser, on a blank page with an empty console log before and after each test
    (a page left open would keep polling a server that is gone)."""
    browser.get("about:blank")
    browser.get_log("browser")  # reading drains the log
    yield browser
    browser.get("about:blank")
    browser.get_log("browser")


def wait_for(driver, predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate(driver)
            if last:
                return last
        except Exception as exc:  # element not there yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def severe_console(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def painted_pixels(driver, canvas_id: str) -> int:
    """Non-transparent pixels of a canvas: > 0 only if something was drawn on it."""
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;", canvas_id)


def texts(driver, css: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, css)
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in rows]


def assert_no_injection(driver) -> None:
    injected = driver.execute_script(
        "return [window.__xss, document.querySelectorAll('main img, main script').length]")
    assert injected == [None, 0], injected


def screenshot(driver, name: str) -> None:
    out = os.environ.get("CHROMARAY_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / name))


def test_live_page_synthetic_db(page, tmp_path):
    browser = page
    from selenium.webdriver.common.by import By

    db = tmp_path / "chromaray.db"
    ids = populate(db)
    with DashboardServer(db) as srv:
        browser.get(f"{srv.url}/#run={ids['fp']}")
        wait_for(browser, lambda d: d.execute_script("return document.body.dataset.refreshed"), what="first refresh")
        # the runs, newest first
        rows = texts(browser, "#runs tbody tr")
        assert [r[0] for r in rows] == ["train", "fingerprint"]
        assert rows[1][1:3] == ["demo library", "running"] and rows[1][4:7] == ["50 / 100", "2", "2.50"]
        # headline cards and the stage row
        cards = {c.find_element(By.CLASS_NAME, "k").text: c.find_element(By.CLASS_NAME, "v").text
                 for c in browser.find_elements(By.CSS_SELECTOR, "#cards .card")}
        assert cards["files done / total"] == "50 / 100" and cards["errors"] == "2"
        assert cards["audio hours processed"] == "2.50" and cards["files/s (last 2 min)"] == "0.5"
        stage = texts(browser, "#stages tbody tr")[0]
        assert stage[0] == "features" and stage[2:6] == ["50 / 100", "2", "2.50", "0.5"]
        # error rows: the tag-like name and reason are shown as text, nothing injected
        errs = texts(browser, "#errors tbody tr")
        assert sorted(e[0] for e in errs) == sorted([f"/music/{XSS_NAME}", "/music/empty.flac"])
        assert SCRIPT_REASON in [e[2] for e in errs]
        assert_no_injection(browser)
        # link to Ray's dashboard (the run recorded "127.0.0.1:8265")
        link = browser.find_element(By.ID, "ray-link")
        assert link.is_displayed() and link.get_attribute("href") == "http://127.0.0.1:8265/"
        # charts drawn
        for cid in ("chart-done", "chart-rate"):
            assert browser.find_element(By.ID, cid).get_attribute("data-drawn") == "1"
            assert painted_pixels(browser, cid) > 500

        # live: a second process appends rows 51..60; the page follows without reload
        w = subprocess.Popen([sys.executable, "-c",
                              "import sys; from tests.pipeline.web.test_dashboard import live_writer; "
                              f"live_writer(sys.argv[1], {ids['fp']!r}, 50, 10, 0.8, 100)", str(db)], cwd=REPO)
        try:
            seen = set()
            def progressed(d):
                seen.add(texts(d, "#stages tbody tr")[0][2])
                return "60 / 100" in seen
            wait_for(browser, progressed, timeout=60, what="live progress to reach 60 / 100")
            assert len(seen) >= 2, seen  # it moved while we watched (intermediate values seen)
            assert w.wait(30) == 0
        finally:
            if w.poll() is None:
                w.kill()
        wait_for(browser, lambda d: texts(d, "#runs tbody tr")[1][4] == "60 / 100", what="runs table update")
        screenshot(browser, "dashboard_fingerprint.png")

        # the training run: loss curves drawn, errors filter shows all runs on demand
        browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")[0].click()
        wait_for(browser, lambda d: "train run" in d.find_element(By.ID, "run-title").text, what="train run")
        wait_for(browser, lambda d: d.find_element(By.ID, "chart-loss").get_attribute("data-drawn") == "1",
                 what="loss chart")
        assert painted_pixels(browser, "chart-loss") > 500
        # its recorded "Ray dashboard URL" is a javascript: URL: shown nowhere as a link
        link = browser.find_element(By.ID, "ray-link")
        assert not link.is_displayed() and link.get_attribute("href") is None
        assert [r[4] for r in texts(browser, "#runs tbody tr")] == ["–", "60 / 100"]
        assert browser.find_element(By.ID, "no-errors").is_displayed()
        browser.find_element(By.ID, "errors-all").click()
        wait_for(browser, lambda d: len(texts(d, "#errors tbody tr")) == 3, what="all errors")
        screenshot(browser, "dashboard_train.png")
        assert_no_injection(browser)
        assert severe_console(browser) == []


def test_missing_database_page(page, tmp_path):
    browser = page
    from selenium.webdriver.common.by import By

    db = tmp_path / "nothing" / "here.db"
    with DashboardServer(db) as srv:
        browser.get(srv.url + "/")
        banner = wait_for(browser, lambda d: d.find_element(By.ID, "banner").text, what="banner")
        assert "does not exist" in banner and str(db) in banner
        assert browser.find_element(By.ID, "no-runs").is_displayed()
        populate(db)
        wait_for(browser, lambda d: len(texts(d, "#runs tbody tr")) == 2, what="runs after the file appears")
        assert not browser.find_element(By.ID, "banner").is_displayed()
        assert severe_console(browser) == []


# ------------------------------------------------------------ real run (lead's job)
def write_library(root: Path, n: int = 4, seconds: float = 4.0) -> list[Path]:
    """``n`` distinct seeded songs, plus a broken file named like an HTML tag."""
    files = good_library(root, n=n, seconds=seconds)
    bad = root / XSS_NAME
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" + np.random.default_rng(7).bytes(64))
    return [*files, bad]


@pytest.mark.slow
@pytest.mark.ray
def test_page_on_real_fingerprint_run(page, tmp_path):
    browser = page
    from selenium.webdriver.common.by import By

    lib, db, out = tmp_path / "lib", tmp_path / "results" / "chromaray.db", tmp_path / "out"
    write_library(lib)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-m", "jobs.fingerprint", str(lib), "--db", str(db), "--out", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        run_id, n_done, n_total = con.execute(
            "SELECT id, n_done, n_total FROM runs WHERE kind='fingerprint' ORDER BY started_at DESC").fetchone()
        n_tracks = con.execute("SELECT count(*) FROM tracks").fetchone()[0]
        err_paths = [p for (p,) in con.execute("SELECT path FROM errors")]
    assert n_tracks == 4 and any(p.endswith(XSS_NAME) for p in err_paths)
    with DashboardServer(db) as srv:
        browser.get(srv.url + "/")
        wait_for(browser, lambda d: d.execute_script("return document.body.dataset.refreshed"), what="refresh")
        rows = texts(browser, "#runs tbody tr")
        assert rows and rows[0][0] == "fingerprint" and rows[0][2] == "finished"
        cards = {c.find_element(By.CLASS_NAME, "k").text: c.find_element(By.CLASS_NAME, "v").text
                 for c in browser.find_elements(By.CSS_SELECTOR, "#cards .card")}
        run = srv.json(f"/api/runs/{run_id}")
        stages = run["stages"].values()
        done = max([n_done] + [s["latest"]["done"] for s in stages])
        total = max([n_total] + [s["latest"]["total"] for s in stages])
        assert done >= 4 and cards["files done / total"] == f"{done} / {total}"
        errs = texts(browser, "#errors tbody tr")
        assert any(e[0].endswith(XSS_NAME) for e in errs), errs
        assert_no_injection(browser)
        assert browser.find_element(By.ID, "chart-done").get_attribute("data-drawn") == "1"
        assert painted_pixels(browser, "chart-done") > 500
        screenshot(browser, "dashboard_real_run.png")
        assert severe_console(browser) == []
