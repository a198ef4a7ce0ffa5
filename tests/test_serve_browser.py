"""The page in a real headless browser: Debian's chromium and chromium-driver, driven by Selenium
with the system's chromedriver (Selenium Manager, which would download one, is never called).
vilbert.serve runs under uvicorn on 127.0.0.1 with the tiny checkpoint of test_serve.py; the test
uploads a demo-world picture, asks a question, an expression and captions, and checks that the
answers and the picture with its boxes appear. Set VILBERT_SERVE_SCREENSHOTS=docs to keep the screenshots
(docs/serve_*.png, as in the README)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="vilbert.serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="vilbert.serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("selenium", reason="the browser test needs selenium (the test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no headless browser: apt-get install chromium chromium-driver (.ci/run does)")

from test_serve import make_serve_setup, make_service  # noqa: E402

from vilbert.predict import Predictor  # noqa: E402
from vilbert.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, minilm_dir):
    """uvicorn serving the tiny checkpoint on a free loopback port, in a thread; its base URL."""
    import uvicorn

    setup = make_serve_setup(tmp_path_factory.mktemp("serve_browser"), minilm_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(make_service(setup)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield setup, f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def browser(monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_downloads(*args, **kwargs):
        raise AssertionError("Selenium Manager was called: it would fetch a driver or a browser")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1180,760", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver, tmp_path, name):
    path = tmp_path / f"serve_{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    keep = os.environ.get("VILBERT_SERVE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def ask(driver, wait, mode, text):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, f"mode-{mode}").click()
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "ask").click()
    head = {"question": "vil_prediction", "expression": "vision_logit", "caption": "vil_logit"}[mode]
    wait.until(lambda d: f"head {head}" in d.find_element(By.ID, "source").text or d.find_element(By.ID, "error").text)
    assert driver.find_element(By.ID, "error").text == ""


# Pixels of the overlay drawn in a colour: (r, g, b) -> whether it counts.
COUNT_PIXELS = """
const canvas = document.getElementById('overlay');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let heat = 0, red = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 0) heat++;
  if (data[i] > 200 && data[i + 1] < 40 && data[i + 2] < 40 && data[i + 3] > 200) red++;
}
return {heat: heat, red: red, width: canvas.width, drawn: JSON.parse(canvas.dataset.drawn || '[]'),
        natural: document.getElementById('picture-img').naturalWidth};
"""


def test_upload_ask_and_see_the_boxes(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    setup, url = server
    wait = WebDriverWait(browser, 30)
    browser.get(url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 4)
    picture = sorted(setup.gallery.glob("*.png"))[1]
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait.until(lambda d: d.find_element(By.ID, "picture-note").text.startswith(picture.name))

    question = "What colour is the star?"
    ask(browser, wait, "question", question)
    expected = Predictor(setup.checkpoint, bert_model=setup.bert, features=setup.features, device="cpu").answer(
        question, picture, top_k=5)
    rows = browser.find_elements(By.CSS_SELECTOR, "#results .bar-row")
    assert [r.find_element(By.CLASS_NAME, "label").text for r in rows] == [a.answer for a in expected.answers]
    assert rows[0].text.endswith(f"{expected.answers[0].probability:.3f}")
    drawn = browser.execute_script(COUNT_PIXELS)
    assert drawn["natural"] == expected.image.width and drawn["width"] > 0
    assert {d["region"] for d in drawn["drawn"]} == set(range(1, expected.image.regions + 1))  # a heat map over every box
    assert drawn["heat"] > 0 and not browser.find_element(By.ID, "attention-controls").get_attribute("hidden")
    screenshot(browser, tmp_path, "question")

    ask(browser, wait, "expression", "the big red star")
    drawn = browser.execute_script(COUNT_PIXELS)
    chosen = [d for d in drawn["drawn"] if d["kind"] == "chosen"]
    assert len(chosen) == 1 and drawn["red"] > 50  # the chosen box, outlined in red
    assert sum(d["kind"] == "runner-up" for d in drawn["drawn"]) >= 1
    # Another co-attention block and head redraw the heat map from the answer already there.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "layer")).select_by_index(0)
    Select(browser.find_element(By.ID, "head")).select_by_index(1)
    assert browser.execute_script(COUNT_PIXELS)["heat"] > 0
    screenshot(browser, tmp_path, "expression")

    ask(browser, wait, "caption", "A red star.\nTwo blue circles.")
    rows = browser.find_elements(By.CSS_SELECTOR, "#results .bar-row")
    assert [r.find_element(By.CLASS_NAME, "label").text for r in rows] == ["A red star.", "Two blue circles."]
    rows[1].click()  # that caption's co-attention
    assert browser.find_elements(By.CSS_SELECTOR, "#results .bar-row")[1].get_attribute("class").endswith("chosen")
    assert browser.execute_script(COUNT_PIXELS)["heat"] > 0
    screenshot(browser, tmp_path, "captions")
