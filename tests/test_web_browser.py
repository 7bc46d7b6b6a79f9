"""The web inbox in a real browser: headless Chromium driving 南部县's inbox (issue 7).

The three real nodes of ``tests/test_reconcile_e2e.py`` run over mutual TLS on 127.0.0.1. 两江新区
accepts an orphan-recognition application for a child registered in 南部县; once 南部县 has received
it, a 南部县 staff member signs in with a one-time code in Chromium, finds the case in the inbox (by
due date), opens it, records the township's first review and approves it. The decision reaches
两江新区 (its case shows the result delivered) and custody moves back to 两江新区, the holder its
own chain names. On the way: a form posted from another site is refused (no session cookie crosses
sites, and the CSRF token is checked), a form with a tampered CSRF token is refused, and 北碚区's staff
cannot open the case on their own node.

Chromium and ChromeDriver are Debian's (``chromium``, ``chromium-driver``; ``.ci/run`` installs
them). Without them these tests skip — unless ``TONGBAN_REQUIRE_BROWSER=1`` (set by ``.ci/run``),
which makes a missing browser a failure. Screenshots of the inbox and the case page are saved in
``$TONGBAN_SCREENSHOTS`` (``make screenshots`` points it at ``docs/img/``), else in the test's
temporary directory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.cases import lifecycle as lc
from gateway.web import accounts
from gateway.web.accounts import StaffRole
from gateway.web.app import WebInbox
from gateway.web.server import WebServer
from tests.test_cases_e2e import application_file, run, state, synced
from tests.test_delivery import eventually
from tests.test_reconcile_e2e import BB, LJ, NB, World, cfg_arg, world

pytestmark = pytest.mark.slow
__all__ = ["world"]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@pytest.fixture
def chrome() -> Iterator[object]:
    if not _browser_available():
        if os.environ.get("TONGBAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TONGBAN_REQUIRE_BROWSER=1 but {CHROMIUM} / {CHROMEDRIVER} are missing")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver's debug log quotes page sources (personal data): never let it reach the captured logs.
    for name in ("selenium", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # find_element waits for the page a click loads
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("TONGBAN_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def full_page_screenshot(driver: object, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1280, max(700, min(int(height) + 40, 4000)))  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    driver.set_window_size(1280, 900)  # type: ignore[attr-defined]


class Attacker:
    """Another site (another port is another origin): a page that posts a form to the inbox."""

    def __init__(self, target: str) -> None:
        page = (
            f'<!doctype html><html><body><form id="f" method="post" action="{target}">'
            '<input name="payment_month" value="2026-12"><input name="csrf" value="guess">'
            '<button id="go" type="submit">领取奖品</button></form></body></html>'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sign_in(driver: object, base: str, username: str, secret: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/signin")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "username").send_keys(username)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "secret").send_keys(secret)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "signin").click()  # type: ignore[attr-defined]


def wait_url(driver: object, url: str) -> None:
    """Wait for the navigation a click started (``current_url`` is the old page until it lands)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(expected_conditions.url_to_be(url))  # type: ignore[arg-type]


def holder(world: World, node_id: str, case_id: str) -> str | None:
    server = world.servers[node_id]
    assert server.cases is not None
    return server.cases.custody.holder(case_id)


def test_staff_decide_a_case_in_the_browser_and_the_residence_node_sees_it(
    world: World, chrome: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = chrome
    out = run("case", "accept", str(application_file(tmp_path, world, "lj")), *cfg_arg(world, LJ))
    match = re.search(r"accepted ([0-9a-f-]{36})", out)
    assert match is not None
    case_id = match.group(1)
    eventually(lambda: synced(world, NB, case_id, lc.Status.RECEIVED), what="the case received at 南部县")
    eventually(lambda: holder(world, NB, case_id) == NB, what="南部县 holding the case")

    servers = {}
    for node_id in (NB, BB):
        node = world.servers[node_id].node
        servers[node_id] = WebServer(WebInbox(node, world.servers[node_id].cases), "127.0.0.1:0")
        servers[node_id].start()
    nb_engine, bb_engine = world.servers[NB].node.engine, world.servers[BB].node.engine
    accounts.create_staff(
        nb_engine, username="nb.zhang", display_name="南部县民政局 张科员", role=StaffRole.REGISTRATION_STAFF,
        division="511321",
    )  # fmt: skip
    accounts.create_staff(
        bb_engine, username="bb.liu", display_name="北碚区民政局 刘科员", role=StaffRole.REGISTRATION_STAFF,
        division="500109",
    )  # fmt: skip
    nb, bb = (f"http://{servers[n].address}" for n in (NB, BB))
    attacker = Attacker(f"{nb}/cases/{case_id}/first-review")
    shots = screenshot_dir(tmp_path)
    try:
        # Sign in with a one-time code; the inbox lists the case by its due date.
        code, _ = accounts.issue_code(nb_engine, "nb.zhang")
        sign_in(driver, nb, "nb.zhang", code)
        wait_url(driver, nb + "/inbox")
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-case="{case_id}"]')  # type: ignore[attr-defined]
        assert "孤儿" in row.text
        assert "乡镇初审" in row.text
        assert "年" in row.text
        cookie = driver.get_cookie(WebInbox(world.servers[NB].node, None).cookie)  # type: ignore[attr-defined]
        assert cookie is not None
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
        full_page_screenshot(driver, shots / "inbox.png")

        # The case page: summary, documents, clock, custody, history, and the forms of this state.
        row.find_element(By.CSS_SELECTOR, "a.case-link").click()
        wait_url(driver, f"{nb}/cases/{case_id}")
        record = world.children["c1"]
        assert driver.find_element(By.ID, "child-name").text == record.name  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "case-status").text == "已接收"  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "holder").text == NB  # type: ignore[attr-defined]
        custody = driver.find_element(By.ID, "custody").text  # type: ignore[attr-defined]
        assert "受理建档" in custody
        assert "移交" in custody
        assert "接收" in custody
        assert driver.find_elements(By.ID, "form-first-review")  # type: ignore[attr-defined]
        full_page_screenshot(driver, shots / "case.png")

        # A form posted from another site (localhost is another site than 127.0.0.1): the session
        # cookie does not go with it (SameSite=Strict), so the inbox sends it to sign in.
        driver.get(attacker.url.replace("127.0.0.1", "localhost"))  # type: ignore[attr-defined]
        driver.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
        wait_url(driver, nb + "/signin")
        assert state(world, NB, case_id)[0] is lc.Status.RECEIVED
        # From the same site but another origin (another port): the cookie goes, the form does not
        # carry the session's CSRF token and its Origin is not the inbox's. Refused; nothing changes.
        driver.get(attacker.url)  # type: ignore[attr-defined]
        driver.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
        assert "表单已失效" in driver.find_element(By.ID, "error").text  # type: ignore[attr-defined]
        assert state(world, NB, case_id)[0] is lc.Status.RECEIVED

        # Our own page with its CSRF token tampered with: refused; nothing changes.
        driver.get(f"{nb}/cases/{case_id}")  # type: ignore[attr-defined]
        driver.execute_script(  # type: ignore[attr-defined]
            "document.querySelector('#form-first-review input[name=csrf]').value = '0'.repeat(64)"
        )
        driver.find_element(By.CSS_SELECTOR, "#form-first-review button").click()  # type: ignore[attr-defined]
        assert "表单已失效" in driver.find_element(By.ID, "error").text  # type: ignore[attr-defined]
        assert state(world, NB, case_id)[0] is lc.Status.RECEIVED

        # The township's first review, then the approval.
        driver.get(f"{nb}/cases/{case_id}")  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "#form-first-review button").click()  # type: ignore[attr-defined]
        wait_url(driver, f"{nb}/cases/{case_id}?done=first-review")
        assert driver.find_element(By.ID, "done").text == "已记录乡镇初审。"  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "case-status").text == "乡镇已初审"  # type: ignore[attr-defined]
        driver.find_element(By.ID, "approve").click()  # type: ignore[attr-defined]
        wait_url(driver, f"{nb}/cases/{case_id}?done=approve")
        assert "已批准" in driver.find_element(By.ID, "done").text  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "case-status").text == "结果已反馈"  # type: ignore[attr-defined]
        assert not driver.find_elements(By.ID, "actions")  # type: ignore[attr-defined]

        # The decision reaches 两江新区, and custody follows it back there.
        eventually(lambda: synced(world, LJ, case_id, lc.Status.RESULT_DELIVERED), what="the result at 两江新区")
        eventually(lambda: holder(world, LJ, case_id) == LJ, what="两江新区 holding the case again")
        eventually(lambda: holder(world, NB, case_id) == LJ, what="南部县's chain naming 两江新区")
        driver.get(f"{nb}/cases/{case_id}")  # type: ignore[attr-defined]
        assert driver.find_element(By.ID, "holder").text == LJ  # type: ignore[attr-defined]
        shown = run("case", "show", case_id, *cfg_arg(world, LJ))
        assert "approve" in shown
        assert "deliver_result" in shown

        # 北碚区's staff, on their own node, cannot open the case.
        code, _ = accounts.issue_code(bb_engine, "bb.liu")
        sign_in(driver, bb, "bb.liu", code)
        wait_url(driver, bb + "/inbox")
        assert case_id not in driver.page_source  # type: ignore[attr-defined]
        driver.get(f"{bb}/cases/{case_id}")  # type: ignore[attr-defined]
        assert "未找到该案件" in driver.find_element(By.ID, "error").text  # type: ignore[attr-defined]
    finally:
        attacker.close()
        for server in servers.values():
            server.stop()
    for name in ("inbox.png", "case.png"):  # the screenshots are real PNG files
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
