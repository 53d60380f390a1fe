"""The web demo as a user meets it: `moscale demo` on a loopback port, driven by headless Chromium.

The browser is Debian's Chromium (`apt-get install chromium`; MOSCALE_CHROMIUM names another binary), driven by
Playwright without a browser download of its own; where it is not installed these tests are skipped and say so. The
page serves a tiny random pipeline, so its motions mean nothing: what is checked is the page (prompt in, animation
and a valid BVH out, an edit, bad input shown as a message). Every wait is bounded: the server's start by
SERVER_START_S (a fresh process imports torch, diffusers and Gradio, slow on a busy 2-core machine), each browser
action by TIMEOUT_S.

MOSCALE_DEMO_SCREENSHOT=docs/images/demo.png saves the page after it generated, as docs/demo.md shows it;
MOSCALE_DEMO_MODEL=PATH serves that pipeline folder instead of the tiny one (the screenshot shows the bundled model).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from moscale.motion.bvh import read_bvh
from moscale.motion.retarget import load_bvh_joints
from tests.helpers import calm_pipeline

ROOT = Path(__file__).resolve().parents[1]
SERVER_START_S = 300
TIMEOUT_S = 120
LOOPBACK = "127.0.0.1"
PROMPTS_LABEL = "Prompts (one motion per line)"


def chromium_binary() -> str:
    binary = os.environ.get("MOSCALE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set MOSCALE_CHROMIUM): no browser test")
    return binary


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`moscale demo` on a free loopback port, serving a tiny pipeline; yields the page's URL."""
    chromium_binary()  # skip before paying for the server
    folder = tmp_path_factory.mktemp("demo")
    model = os.environ.get("MOSCALE_DEMO_MODEL")
    if not model:
        model = folder / "pipeline"
        calm_pipeline().save_pretrained(model)
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    url = f"http://{LOOPBACK}:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", NO_PROXY=LOOPBACK, no_proxy=LOOPBACK)
    command = [sys.executable, "-m", "moscale.cli", "demo", "--model", str(model)]
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [*command, "--host", LOOPBACK, "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + SERVER_START_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"moscale demo exited with {process.returncode}:\n{(folder / 'server.log').read_text()}")
            try:
                if direct.open(url, timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"moscale demo did not answer within {SERVER_START_S} s:\n{(folder / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    args = ["--no-proxy-server"] + (["--no-sandbox"] if os.geteuid() == 0 else [])  # Chromium refuses root otherwise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_binary(), headless=True, args=args, timeout=TIMEOUT_S * 1000
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 1200}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_S * 1000)
    expect.set_options(timeout=TIMEOUT_S * 1000)  # expect() has its own default, 5 s, too short on a busy machine
    page = context.new_page()
    page.goto(server)
    yield page
    assert "Traceback" not in page.content()
    context.close()


def set_slider(page, label: str, value: str) -> None:
    box = page.get_by_label(f"number input for {label}")
    box.fill(value)
    box.press("Enter")


def generate(page, prompts: str, seconds: str) -> None:
    page.get_by_label(PROMPTS_LABEL).fill(prompts)
    from_text = page.get_by_label("Length from the text")  # shown only for a pipeline with a length estimator
    if from_text.is_visible():
        from_text.uncheck()
    set_slider(page, "Length (seconds)", seconds)
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#animation img")).to_have_attribute("src", re.compile(r"motions\.gif$"))


def download(page, link_selector: str, folder: Path) -> Path:
    with page.expect_download() as started:
        page.locator(link_selector).click()
    path = folder / started.value.suggested_filename
    started.value.save_as(path)
    return path


def test_prompts_give_an_animation_and_a_valid_bvh(page, tmp_path):
    generate(page, "a person walks forward\na person waves with the left hand", "3")
    expect(page.locator("#summary")).to_contain_text("lengths 3 s, 3 s")

    gif = page.request.get(page.locator("#animation img").get_attribute("src"))
    assert gif.ok and gif.body()[:6] == b"GIF89a"
    assert len(imageio.mimread(gif.body())) == 30  # 3 s at 20 fps, one frame in two drawn

    bvh_path = download(page, '#files a[href$="01_a_person_waves_with_the_left_hand.bvh"]', tmp_path)
    joints_path = download(page, '#files a[href$="01_a_person_waves_with_the_left_hand_joints.npy"]', tmp_path)
    bvh = read_bvh(bvh_path)
    assert bvh.num_frames == 60 and bvh.fps == 20 and len(bvh.names) == 22
    joints = np.load(joints_path)
    assert joints.shape == (60, 22, 3)
    # A random model's bones change length from frame to frame, which a BVH skeleton cannot; its root path can.
    np.testing.assert_allclose(load_bvh_joints(bvh, scale=1.0)[:, 0], joints[:, 0], atol=1e-4)

    if os.environ.get("MOSCALE_DEMO_SCREENSHOT"):
        page.screenshot(path=os.environ["MOSCALE_DEMO_SCREENSHOT"], full_page=True)


def test_an_empty_prompt_is_a_message_in_the_page(page):
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".toast-body")).to_contain_text("Type a prompt first")


def test_edit_a_generated_motion_side_by_side(page):
    generate(page, "a person walks forward", "3")
    page.get_by_role("tab", name="Edit").click()
    expect(page.locator("#source input")).to_have_value("1. a person walks forward (3 s)")
    page.get_by_label("Prompt for the regenerated span").fill("a person jumps")

    # A span beyond the 3 s source is refused with the pipeline's message...
    set_slider(page, "...to (seconds)", "4")
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(page.locator(".toast-body")).to_contain_text("must satisfy 0 <= start < end <= 3 s")

    # ...and one inside it gives source and result side by side.
    set_slider(page, "...to (seconds)", "2.4")
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(page.locator("#edit-animation img")).to_have_attribute("src", re.compile(r"source_and_edit\.gif$"))
    expect(page.locator("#edit-summary")).to_have_text("Regenerated 2 s to 2.4 s of a 3 s motion.")
    expect(page.locator("#edit-files a")).to_have_count(3)
    expect(page.locator("#source input")).to_have_value("2. edited: a person jumps (3 s)")
