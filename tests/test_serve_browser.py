"""The chat in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via Selenium.

Skipped when Chromium, its driver or Selenium is missing. The README's pictures (docs/chat_desktop.png,
docs/chat_phone.png) come from ``CODI2_DOCS_SCREENSHOTS=1 CODI2_BROWSER_MODEL=checkpoints/codi2-mini pytest
tests/test_serve_browser.py -k reload``. Loads the page, sends a message with an
image, waits for the reply's image in the DOM and saves a screenshot to the test's tmp_path (and
to ``$CODI2_ARTIFACTS`` when set). The random tiny model gets its image through the app's
"Reply starts with" setting (``Here <img>``), see tests/test_serve.py.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from .conftest import make_image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER and HAVE_SELENIUM),
                       reason="needs headless Chromium: apt-get install chromium chromium-driver; pip install selenium"),
]


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tmp_path_factory):
    """(app, url): the tiny model with the mini world's examples and model card, on a free loopback port."""
    import shutil

    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.examples import write_examples
    from data_builders.world.model_card import write_model_card
    from serve.app import build_app

    if os.environ.get("CODI2_BROWSER_MODEL"):  # e.g. checkpoints/codi2-mini, for the README's screenshots
        model = Path(os.environ["CODI2_BROWSER_MODEL"])
    else:
        model = tmp_path_factory.mktemp("model") / "tiny"
        shutil.copytree(tiny_pipeline_dir, model)
        write_examples(model / "examples")  # the app shows the examples a model folder ships
        write_model_card(model, "codi2-tiny")  # …and its card
    app = build_app(CoDi2Pipeline.from_pretrained(model), workdir=tmp_path_factory.mktemp("serve"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch("127.0.0.1", port, block=False, quiet=True)
    yield app, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def url(served):
    return served[1]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the network log
    d = webdriver.Chrome(options=opts, service=Service(DRIVER))
    yield d
    d.quit()


DOCS = Path(__file__).resolve().parent.parent / "docs"


def _save_screenshot(d, tmp_path: Path, name: str, docs: bool = False) -> Path:
    """Saves a screenshot to tmp_path (and $CODI2_ARTIFACTS); ``docs``: also to docs/ when
    $CODI2_DOCS_SCREENSHOTS=1 (how the README's pictures are made)."""
    path = tmp_path / name
    d.save_screenshot(str(path))
    art = os.environ.get("CODI2_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(art) / name)
    if docs and os.environ.get("CODI2_DOCS_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / name)
    return path


def _requested_urls(d) -> set[str]:
    """Every URL the page asked for so far (Chromium's performance log: requests, web sockets, preloads)."""
    import json

    urls = set()
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            urls.add(params["request"]["url"])
        elif msg["method"] == "Network.webSocketCreated":
            urls.add(params["url"])
    return urls


def _non_loopback(urls: set[str]) -> list[str]:
    from urllib.parse import urlsplit

    local = {"127.0.0.1", "localhost", "::1", "[::1]"}
    return sorted(u for u in urls if urlsplit(u).scheme not in ("data", "blob", "about")
                  and urlsplit(u).hostname not in local)


def test_send_an_image_and_see_the_reply_image(url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    d.get(url)
    wait = WebDriverWait(d, 90)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#codi2-input textarea"))
    # a one-click example runs at once (the random model answers with text)
    card = wait.until(lambda d: next((e for e in d.find_elements(By.XPATH, "//*[@id='codi2-chat']//button")
                                      if "Draw a large red circle" in e.text), None))
    _save_screenshot(d, tmp_path, "serve_empty.png")
    card.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='bot']"))
    assert any("Draw a large red circle" in u.text
               for u in d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='user']"))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#codi2-input textarea").is_enabled())
    next(b for b in d.find_elements(By.CSS_SELECTOR, "#codi2-actions button") if b.text.strip() == "Clear").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='user']"))
    # an image in, an image out
    d.find_element(By.CSS_SELECTOR, "#codi2-advanced button, #codi2-advanced .label-wrap").click()
    prefix = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#codi2-prefix textarea")
                                        if e.is_displayed()), None))
    prefix.send_keys("Here <img>")
    img = make_image(4, 48)
    img.save(tmp_path / "upload.png")
    d.find_element(By.CSS_SELECTOR, "#codi2-input input[type=file]").send_keys(str(tmp_path / "upload.png"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#codi2-input img"))  # the attachment's thumbnail
    box = d.find_element(By.CSS_SELECTOR, "#codi2-input textarea")
    box.send_keys("Make it blue, please.")
    box.send_keys(Keys.ENTER)

    def reply_image(d):
        for e in d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='bot'] img"):
            if "out-image" in (e.get_attribute("src") or ""):
                return e
        return None

    el = wait.until(reply_image)
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", el))
    time.sleep(0.5)  # let the layout settle for the screenshot
    shot = _save_screenshot(d, tmp_path, "serve_chat.png")
    users = d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='user']")
    assert any("Make it blue, please." in u.text for u in users)
    srcs = [e.get_attribute("src") or "" for e in d.find_elements(By.CSS_SELECTOR, "#codi2-chat img")]
    assert any("in-upload" in s for s in srcs), srcs  # the uploaded image is shown in the user's message
    assert shot.stat().st_size > 10_000


# ----------------------------------------------------------------------------- issue 44
def _wait(d, seconds: float = 120):
    """A wait that looks again when the chat re-renders an element under it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, seconds, ignored_exceptions=(StaleElementReferenceException,))


def _wait_ready(d, wait):
    from selenium.webdriver.common.by import By

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#codi2-input textarea"))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#codi2-input textarea").is_enabled())


def _send_text(d, wait, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#codi2-input textarea")
                                     if e.is_enabled()), None))
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def _set_prefix(d, wait, text: str) -> None:
    from selenium.webdriver.common.by import By

    d.find_element(By.CSS_SELECTOR, "#codi2-advanced button, #codi2-advanced .label-wrap").click()
    box = wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#codi2-prefix textarea")
                                     if e.is_displayed()), None))
    box.send_keys(text)


def _reply_images(d) -> list:
    from selenium.webdriver.common.by import By

    return [e for e in d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='bot'] img")
            if "out-image" in (e.get_attribute("src") or "") or "copy-out-image" in (e.get_attribute("src") or "")]


def _user_texts(d) -> list[str]:
    from selenium.webdriver.common.by import By

    return [u.text for u in d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='user']")]


def _shown_share_buttons(d) -> list:
    from selenium.webdriver.common.by import By

    return [b for b in d.find_elements(By.CSS_SELECTOR, "button[aria-label='Share'], button[title='Share']")
            if b.is_displayed()]


def test_reload_restores_the_conversation_its_media_and_refs(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app, url = served
    d = browser
    wait = _wait(d)
    d.get(url)
    _wait_ready(d, wait)
    about = d.find_element(By.ID, "codi2-about").text
    assert "coloured shapes, the sounds they make and how they move" in about  # the model card, at the top
    _set_prefix(d, wait, "Here <img>")
    _send_text(d, wait, "Draw a red circle.")
    wait.until(lambda d: len(_reply_images(d)) == 1)
    _wait_ready(d, wait)
    _send_text(d, wait, "Now make @1 blue.")
    wait.until(lambda d: len(_reply_images(d)) == 2 and len(_user_texts(d)) >= 2)
    _wait_ready(d, wait)
    wait.until(lambda d: all(e.get_attribute("alt") for e in _reply_images(d)))  # set once the turn is saved
    img = _reply_images(d)[0]
    assert img.get_attribute("alt").startswith("@1 image: Here"), img.get_attribute("alt")  # the caption
    assert img.size["width"] >= 256 and img.size["height"] >= 256, img.size
    assert d.execute_script("return getComputedStyle(arguments[0]).imageRendering", img) == "pixelated"
    assert not _shown_share_buttons(d)
    before = d.find_element(By.ID, "codi2-chat").text
    # reload mid-conversation: the chat, its media and @N come back (the server's session, taken up again)
    d.refresh()
    _wait_ready(d, wait)
    wait.until(lambda d: len(_reply_images(d)) == 2)
    users = _user_texts(d)
    assert any("Draw a red circle." in u for u in users) and any("Now make" in u for u in users), users
    chat = d.find_element(By.ID, "codi2-chat").text
    assert chat.count("@1") == before.count("@1") == 2 and chat.count("@2") == before.count("@2") == 1, chat
    past = d.find_element(By.CSS_SELECTOR, "#codi2-past input").get_attribute("value")
    assert "Draw a red circle." in past, past  # the list of past conversations, this one selected
    time.sleep(0.5)
    _save_screenshot(d, tmp_path, "chat_desktop.png", docs=True)
    # the server let the session go (restart, idle, evicted): the browser's copy rebuilds it, and says so
    for st in app.manager.states():
        if st.log and st.log[0].user.content[-1].text == "Draw a red circle.":
            app.manager.drop_conversation(st.key or "", st.conversation_id)
    d.refresh()
    _wait_ready(d, wait)
    wait.until(lambda d: len(_reply_images(d)) == 2)
    assert "restored from this browser's copy" in d.find_element(By.ID, "codi2-chat").text
    _send_text(d, wait, "And @2 once more.")  # @2 resolves in the rebuilt session
    wait.until(lambda d: any("once more" in u for u in _user_texts(d)))
    _wait_ready(d, wait)
    chat = d.find_element(By.ID, "codi2-chat").text
    assert "no media" not in chat and chat.count("⚠️") == 1, chat  # only the note that it was restored
    user_imgs = d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='user'] img")
    assert len(user_imgs) == 2, chat  # @1 in turn 2 and @2 in turn 3, attached again
    # the page and every asset it loaded asked only the loopback server
    assert _non_loopback(_requested_urls(d)) == []
    # phone width: the settings sidebar starts closed and the controls are on screen
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1,
                                                             "mobile": True})
    d.refresh()
    _wait_ready(d, wait)
    wait.until(lambda d: len(_reply_images(d)) >= 1)
    time.sleep(1)
    assert d.execute_script("return document.querySelector('.sidebar').getBoundingClientRect().right") <= 1
    for sel in ("#codi2-input", "#codi2-actions"):
        bottom = d.execute_script("return document.querySelector(arguments[0]).getBoundingClientRect().bottom", sel)
        assert bottom <= 844, (sel, bottom)
    _save_screenshot(d, tmp_path, "chat_phone.png", docs=True)


def test_a_queue_position_shows_while_another_clients_turn_runs(served, browser, tmp_path):
    import re

    from gradio_client import Client
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app, url = served
    d = browser
    wait = _wait(d)
    d.get(url)
    _wait_ready(d, wait)
    other = Client(url, verbose=False)
    job = other.submit(message={"text": "A long clip.", "files": []}, prefix="Here <vid>", steps=100, seed=0,
                       api_name="/chat")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(st.busy for st in app.manager.states()):
            time.sleep(0.05)
        _send_text(d, wait, "Is it my turn?")
        status = wait.until(lambda d: next((m.group(0) for e in d.find_elements(By.CSS_SELECTOR, "#codi2-chat, "
                                            "#codi2-chat ~ *, .block") for m in [re.search(r"queue: \d+/\d+", e.text)]
                                            if m), None))
        box = d.find_element(By.CSS_SELECTOR, "#codi2-input textarea")
        assert not box.is_enabled() and "Waiting" in (box.get_attribute("placeholder") or "")  # Send disabled
        assert any("Is it my turn?" in u for u in _user_texts(d))  # the message shows while it waits
        _save_screenshot(d, tmp_path, "chat_queued.png")
        assert status.startswith("queue: 1/")
    finally:
        other.predict(api_name="/stop")
        job.result()
    _wait_ready(d, wait)  # the page's turn ran once the other one stopped
    assert len(d.find_elements(By.CSS_SELECTOR, "#codi2-chat [data-testid='bot']")) >= 1


def test_the_page_requests_nothing_outside_loopback(url, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    d.get(url)
    _wait_ready(d, _wait(d))
    time.sleep(2)  # late assets (fonts, icons, lazy chunks)
    urls = _requested_urls(d)
    assert any("/assets/" in u for u in urls) and _non_loopback(urls) == []
    assert not _shown_share_buttons(d)
