"""The Gradio Space (`spaces_demo/app.py`): launched on localhost, driven with gradio_client and a real Chromium."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.evaluation import is_browser_playable

APP = Path(__file__).resolve().parent.parent / "spaces_demo" / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
STEPS = 25
"""Episode step limit used by the tests (the tiny random policy usually falls before it)."""


@pytest.fixture(scope="module")
def app():
    """`spaces_demo/app.py` imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("space_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained Hopper Decision Mamba saved with `save_pretrained`."""
    torch.manual_seed(0)
    config = DecisionMambaConfig.from_preset(
        "dmamba-hopper", hidden_size=32, num_hidden_layers=1, state_dim=11, act_dim=3, context_length=8,
        env_id="Hopper-v5", target_return=3600.0, state_mean=[0.0] * 11, state_std=[1.0] * 11,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("space_checkpoint")
    DecisionMambaModel(config).save_pretrained(path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):
    """`python spaces_demo/app.py` on a free localhost port, offline, writing its files under a temp dir."""
    workdir = tmp_path_factory.mktemp("space_server")
    port = _free_port()
    env = {
        **os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        "DMAMBA_SPACE_MODEL": str(checkpoint), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
        "MPLBACKEND": "Agg", "TMPDIR": str(workdir),
    }  # fmt: skip
    log = workdir / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(APP)], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_gradio_client_plays_an_episode(server, checkpoint):
    from gradio_client import Client

    client = Client(server, verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/play", "/suggest_target",
    }  # fmt: skip
    inputs = (str(checkpoint), "Hopper-v5", 3, 3600, "window", STEPS)
    video, total, score, summary, returns_plot, attention_plot = client.predict(*inputs, api_name="/play")
    assert Path(video).is_file() and is_browser_playable(video)
    assert isinstance(total, float) and isinstance(score, float)
    assert score == pytest.approx(100 * (total + 20.272305) / 3254.572305, abs=1e-2)
    assert "**Return**" in summary and returns_plot["type"] == attention_plot["type"] == "matplotlib"
    again = client.predict(str(checkpoint), "hopper", 3, 3600.0, "window", STEPS, api_name="/play")
    assert again[1] == total and "cached" in again[3]
    assert client.predict("ALE/Breakout-v5", 3600, api_name="/suggest_target") == 90


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (("no-such-user/no-such-model", "Hopper-v5", 0, 3600, "window", STEPS), "Could not load model"),
        (
            ("{ckpt}", "HalfCheetah-v5", 0, 3600, "window", STEPS),
            "state_dim=11: the model does not fit HalfCheetah-v5",
        ),
        (("{ckpt}", "Hopper-v5", 0, 1e9, "window", STEPS), "target return for Hopper-v5 must be a number"),
        (("{ckpt}", "Hopper-v5", -1, 3600, "window", STEPS), "seed must be a whole number from 0"),
        (("{ckpt}", "NoSuchEnv-v0", 0, 3600, "window", STEPS), "Unknown environment 'NoSuchEnv-v0'"),
    ],
)
def test_bad_inputs_give_readable_messages(server, checkpoint, inputs, message):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    inputs = tuple(str(checkpoint) if value == "{ckpt}" else value for value in inputs)
    with pytest.raises(AppError) as raised:
        Client(server, verbose=False).predict(*inputs, api_name="/play")
    assert message in str(raised.value) and "Traceback" not in str(raised.value)


def test_queue_explicit_api_names_and_request_parsing(app):
    demo = app.build_demo()
    public = [
        fn.api_name
        for fn in demo.fns.values()
        if fn.api_name and getattr(fn, "api_visibility", "public") == "public"
    ]
    assert sorted(public) == ["play", "suggest_target"]
    assert app.clear_results() == (None, None, None, "", None, None), (
        "a new request first empties every output"
    )
    assert demo._queue.max_size == app.QUEUE_SIZE and demo._queue.default_concurrency_limit == 1
    assert app.target_bounds("ALE/Pong-v5") == (-21.0, 100.0) and app.target_bounds("ALE/Tennis-v5")[0] < 0
    request = app.parse_request(" some/model ", "walker2d", 7.0, 100, "recurrent", 10)
    assert request == app.Request("some/model", "Walker2d-v5", 7, 100.0, "recurrent", 10)


def test_cache_is_bounded_and_deletes_evicted_videos(app, tmp_path):
    cache, runs = app.EpisodeCache(2), []

    def run(request):
        runs.append(request)
        video = tmp_path / f"{request.seed}.mp4"
        video.write_bytes(b"")
        return type("Recording", (), {"video": video})()

    requests = [app.Request("m", "Hopper-v5", seed, 1.0, "window", 5) for seed in range(3)]
    for request in [requests[0], requests[1], requests[0], requests[2]]:
        cache.get(request, run)
    assert runs == requests and cache.get(requests[0], run)[1]
    assert not (tmp_path / "1.mp4").exists() and (tmp_path / "0.mp4").exists()


def _chromium() -> str:
    """Debian's Chromium, installed here when missing and running as root (CI); skip only without root."""
    if not Path(CHROMIUM).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"], env=env, check=False, capture_output=True
        )
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0:
            pytest.skip(f"{CHROMIUM} is missing and installing it needs root: apt-get install -y chromium")
        pytest.fail(f"{CHROMIUM} is missing and `apt-get install -y chromium` did not install it")
    return CHROMIUM


def test_browser_plays_an_episode(server, checkpoint, tmp_path):
    executable = _chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#play-button").click()
            video = page.locator("#episode-video video")
            expect(video).to_have_attribute("src", re.compile(r".+\.mp4"), timeout=90_000)
            expect(page.locator("#summary")).to_contain_text("Return", timeout=10_000)
            page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
            textbox = page.get_by_label("Model (Hub id or local folder)")
            textbox.fill("no-such-user/no-such-model")
            page.locator("#play-button").click()
            expect(page.get_by_text("Could not load model").first).to_be_visible(timeout=30_000)
            expect(page.locator("#summary")).not_to_contain_text("Return")  # the old episode is gone
            expect(page.locator("#episode-video video")).to_have_count(0)
        finally:
            browser.close()
    assert (tmp_path / "space.png").stat().st_size > 10_000


def test_deploy_stages_the_app_and_the_package(tmp_path):
    spec = importlib.util.spec_from_file_location("space_deploy", APP.parent / "deploy.py")
    deploy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deploy)
    folder = deploy.stage(tmp_path / "space", "me/playground", model="me/dmamba-hopper")
    assert {"app.py", "README.md", "packages.txt", "pyproject.toml", "requirements.txt"} <= {
        path.name for path in folder.iterdir()
    }
    assert (folder / "src" / "hf_decision_mamba" / "evaluation" / "episode.py").is_file()
    assert not list(folder.rglob("__pycache__"))
    lines = (folder / "requirements.txt").read_text().splitlines()
    assert (
        "hf-decision-mamba @ git+https://huggingface.co/spaces/me/playground" in lines and "-e ." not in lines
    )
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "  - me/dmamba-hopper\n" in card and "app_file: app.py" in card
