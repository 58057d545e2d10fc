"""The demo in a real browser: `vision-studies demo` on loopback, headless Chromium uploads a fixture digit."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from vision_studies.app import PACKAGE_REQUIREMENT
from vision_studies.cli import main
from vision_studies.data import dataloaders
from vision_studies.export import CONFIG_FILE, PICKLE_FILE, WEIGHTS_FILE, export_learner, load_exported
from vision_studies.models import build_learner
from vision_studies.train import fit, seed_everything

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's packages, installed by .ci/run


@pytest.fixture(scope="module")
def lenet_export(mnist, tmp_path_factory):
    """LeNet-5 trained for two epochs on the MNIST fixture, exported with the pickle (the Space must drop it)."""
    spec, path = mnist
    tmp = tmp_path_factory.mktemp("app")
    seed_everything(0)
    learn = build_learner(dataloaders(spec, path, 28, batch_size=64, augment="none"), "lenet5", pretrained=False, path=tmp)
    fit(learn, 2, 1e-2)
    return export_learner(learn, tmp / "export", arch="lenet5", image_size=28, dataset="mnist")


@pytest.fixture(scope="module")
def digit(mnist, lenet_export):
    """A held-out digit the model gets right, with its true label."""
    spec, path = mnist
    predictor = load_exported(lenet_export)
    for image in sorted((path / spec.valid_folder).glob("*/*.png")):
        if predictor.predict(image).labels[0] == image.parent.name:
            return image, image.parent.name
    pytest.fail("the model got no held-out digit right")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with code {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the demo did not answer on {url} within {timeout} s")


def _headless_chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", "--window-size=1200,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def ask_the_demo_page(export, image, tmp_path, timeout: int = 60) -> tuple[str, list[str]]:
    """Serve `export` with `vision-studies demo`, upload `image` in headless Chromium, press Submit, and read
    the page: (the top label shown, the classes listed under it in order). A screenshot lands in tmp_path."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vision_studies.cli", "demo", str(export), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    browser = None
    try:
        _wait_until_served(url, proc)
        browser = _headless_chromium(tmp_path / "profile")
        browser.get(url)
        wait = WebDriverWait(browser, timeout)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        upload.send_keys(str(image))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "img[src]")))  # the upload shows
        wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Submit']"))).click()
        top = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=label-output-value]")))
        wait.until(lambda _: top.text.strip() != "")
        browser.save_screenshot(str(tmp_path / "demo.png"))
        shown = [e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, "[data-testid$='-confidence-set'] dt")]
        return top.text.strip(), shown
    finally:
        if browser is not None:
            browser.quit()
        proc.terminate()
        proc.wait(timeout=30)


def test_browser_uploads_a_digit_and_reads_the_prediction(lenet_export, digit, tmp_path):
    image, truth = digit
    expected = load_exported(lenet_export).scores(image, top_k=5)
    top, shown = ask_the_demo_page(lenet_export, image, tmp_path)
    assert top == truth == next(iter(expected))
    assert shown == list(expected)  # the classes listed under it: the model's top five, in order


def test_space_folder_is_ready_to_upload(lenet_export, digit, tmp_path):
    out = tmp_path / "space"
    assert main(["space", str(lenet_export), str(out), "--model-repo", "someone/mnist-lenet5"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", "app.py", f"model/{CONFIG_FILE}", f"model/{WEIGHTS_FILE}", "requirements.txt"
    ]  # never the pickle
    assert (lenet_export / PICKLE_FILE).exists()
    header = SpaceCard.load(out / "README.md").data
    assert (header.sdk, header.app_file, header.models) == ("gradio", "app.py", ["someone/mnist-lenet5"])
    assert (out / "requirements.txt").read_text().split() == PACKAGE_REQUIREMENT.split()

    # The Space's own app.py builds the demo from its model/ folder; called as a function, it predicts.
    demo = runpy.run_path(str(out / "app.py"), run_name="space")["demo"]
    image, truth = digit
    assert demo(str(image), api_name="predict")["label"] == truth


def test_cli_reports_a_folder_that_is_no_export(tmp_path, capsys):
    assert main(["space", str(tmp_path), str(tmp_path / "space")]) == 2
    assert "config.json does not exist" in capsys.readouterr().err
