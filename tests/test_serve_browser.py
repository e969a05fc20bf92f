"""The chat in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via Selenium.

Skipped when Chromium, its driver or Selenium is missing. Loads the page, sends a message with an
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
def url(tiny_pipeline_dir, tmp_path_factory):
    import shutil

    from codi2.pipeline import CoDi2Pipeline
    from data_builders.world.examples import write_examples
    from serve.app import build_app

    model = tmp_path_factory.mktemp("model") / "tiny"
    shutil.copytree(tiny_pipeline_dir, model)
    write_examples(model / "examples")  # the app shows the examples a model folder ships
    app = build_app(CoDi2Pipeline.from_pretrained(model), workdir=tmp_path_factory.mktemp("serve"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch("127.0.0.1", port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(DRIVER))
    yield d
    d.quit()


def _save_screenshot(d, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    d.save_screenshot(str(path))
    art = os.environ.get("CODI2_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(art) / name)
    return path


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
