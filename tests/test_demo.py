"""`perceptclip demo` and the Space of `push_to_hub.py --space`: gradio_client's `/score` returns what
`PerceptScorer` computes, a real browser shows it, the Space app serves the same, startup errors are one line."""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from perceptclip_hf.scoring.scorer import PerceptScorer
from tests.helpers.cli import assert_clean_failure, free_port, perceptclip
from tests.helpers.models import random_image
from tests.helpers.paths import REPO_ROOT

gradio_client = pytest.importorskip("gradio_client", reason="gradio is in the dev extra: pip install -e '.[dev]'")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SERVER_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
STARTUP_S = 240  # importing torch + gradio and loading the models, on a busy 2-core machine
DIGITS = 4  # decimals the page shows


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it exits or the deadline passes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(url + "config", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)  # poll interval: the loop waits for the condition, not for a fixed time
    pytest.fail(f"{url} did not answer within {STARTUP_S}s:\n{log.read_text()[-3000:]}")


def serve(command: list[str], port: int, log: Path, env: dict | None = None, cwd: Path = REPO_ROOT):
    """Start a server process (output to ``log``) on ``port``; returns it and its URL once it answers."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **SERVER_ENV, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
    except BaseException:
        stop(process)
        raise
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def demo_command(*args) -> list[str]:
    """`perceptclip demo ...` as a user runs it: the console script (else the same entry point via -m)."""
    script = shutil.which("perceptclip", path=os.path.dirname(sys.executable))
    return [*([script] if script else [sys.executable, "-m", "perceptclip_hf.cli"]), "demo", *map(str, args)]


@pytest.fixture(scope="module")
def demo_server(quality_dir, emotion_dir, tmp_path_factory):
    """One `perceptclip demo` with a regression model and a classifier, shared by the tests of this module."""
    log = tmp_path_factory.mktemp("demo-server") / "server.log"
    port = free_port()
    process, url = serve(
        demo_command("--model", quality_dir, "--model", emotion_dir, "--host", "127.0.0.1", "--port", port), port, log
    )
    try:
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("demo-images")
    paths = [folder / f"photo_{seed}.png" for seed in (11, 12, 13)]
    for seed, path in zip((11, 12, 13), paths):
        random_image(seed).save(path)
    return paths


def scorer(model_dir: Path) -> PerceptScorer:
    return PerceptScorer.from_pretrained(model_dir, num_workers=0)


def assert_same_result(served: dict, expected: dict) -> None:
    """PerceptScorer's dict, key for key (floats to float error: another process, same computation)."""
    assert served.keys() == expected.keys(), (served, expected)
    if "score" in expected:
        assert served["score"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-6)
    else:
        assert served["label"] == expected["label"]
        assert list(served["probabilities"]) == list(expected["probabilities"])
        assert served["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


# ----- gradio_client ---------------------------------------------------------------------------------------------


def test_score_endpoint_of_several_models_gives_each_scorers_result(demo_server, quality_dir, emotion_dir, image_files):
    client = gradio_client.Client(demo_server, verbose=False)
    served = client.predict(gradio_client.handle_file(str(image_files[0])), api_name="/score")
    assert set(served) == {"quality", "emotion"}  # named by their task, as `perceptclip predict` names them
    assert_same_result(served["quality"], scorer(quality_dir)(image_files[0]))
    assert_same_result(served["emotion"], scorer(emotion_dir)(image_files[0]))


def test_score_endpoint_of_one_model_is_the_scorers_dict(emotion_dir, image_files):
    from perceptclip_hf.demo.app import build_demo, launch, load_models

    demo = build_demo(load_models([str(emotion_dir)]))
    _, url, _ = launch(demo, port=free_port(), block=False)
    try:
        served = gradio_client.Client(url, verbose=False).predict(
            gradio_client.handle_file(str(image_files[1])), api_name="/score"
        )
    finally:
        demo.close()
    assert_same_result(served, scorer(emotion_dir)(image_files[1]))


def test_many_images_give_a_table_a_histogram_and_the_csv(demo_server, quality_dir, emotion_dir, image_files):
    client = gradio_client.Client(demo_server, verbose=False)
    table, plot, csv_file = client.predict(
        [gradio_client.handle_file(str(path)) for path in image_files], api_name="/score_files"
    )
    with open(csv_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [path.name for path in image_files]
    assert table["headers"] == list(rows[0])  # the table shows the CSV's columns (those of `perceptclip predict`)
    quality, emotion = scorer(quality_dir)(image_files), scorer(emotion_dir)(image_files)
    for row, score, feeling in zip(rows, quality, emotion):
        assert float(row["quality_score"]) == pytest.approx(score["score"], rel=1e-5, abs=1e-6)
        assert row["emotion_label"] == feeling["label"]
        for label, probability in feeling["probabilities"].items():
            assert float(row[f"emotion_prob_{label}"]) == pytest.approx(probability, abs=1e-6)
    assert plot and plot.get("type") == "matplotlib" and plot["plot"].startswith("data:image/")


# ----- a real browser ----------------------------------------------------------------------------------------------


def test_a_browser_uploads_an_image_and_reads_the_scorers_result(
    demo_server, quality_dir, emotion_dir, image_files, tmp_path
):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
            "apt-get install -y chromium chromium-driver (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver path below, selenium downloads nothing
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(demo_server)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
        upload.send_keys(str(image_files[2]))
        pattern = re.compile(r"quality: score (-?\d+\.\d+).*emotion: (\w+) \(p = (\d\.\d+)\)", re.S)
        shown = wait.until(lambda page: pattern.search(page.find_element(By.ID, "scores").text))
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#heatmap img"))
        screenshot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    quality, emotion = scorer(quality_dir)(image_files[2]), scorer(emotion_dir)(image_files[2])
    assert float(shown[1]) == pytest.approx(quality["score"], abs=0.5 * 10**-DIGITS + 1e-6)
    assert shown[2] == emotion["label"]
    assert float(shown[3]) == pytest.approx(emotion["probabilities"][emotion["label"]], abs=0.5 * 10**-DIGITS + 1e-6)
    with Image.open(screenshot) as picture:
        assert picture.format == "PNG" and picture.size[0] >= 800 and picture.getextrema() != ((0, 0),) * 3


# ----- the Space folder ----------------------------------------------------------------------------------------------


def test_the_space_folder_serves_the_same_app(quality_dir, image_files, tmp_path):
    from perceptclip_hf.cli.push import main as push_to_hub  # = python push_to_hub.py (tests/test_architecture.py)

    assert (
        push_to_hub(
            [
                "--model-dir",
                str(quality_dir),
                "--repo-id",
                "me/tiny-quality",
                "--dry-run",
                str(tmp_path / "repo"),
                "--space",
                str(tmp_path / "space"),
            ]
        )
        == 0
    )
    space = tmp_path / "space"
    readme = (space / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    import gradio

    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["sdk_version"] == gradio.__version__
    assert front["title"] and front["models"] == ["me/tiny-quality"]
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("perceptclip-hf") for line in requirements)
    assert '"me/tiny-quality"' in (space / "app.py").read_text()  # the Hub id it loads on the Space
    # Run as Spaces run it (python app.py), the model given as the published repo folder instead of its Hub id.
    port = free_port()
    process, url = serve(
        [sys.executable, "app.py"],
        port,
        tmp_path / "space.log",
        cwd=space,
        env={
            "PERCEPTCLIP_MODEL": str(tmp_path / "repo"),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(port),
        },
    )
    try:
        served = gradio_client.Client(url, verbose=False).predict(
            gradio_client.handle_file(str(image_files[0])), api_name="/score"
        )
    finally:
        stop(process)
    assert_same_result(served, scorer(quality_dir)(image_files[0]))


# ----- startup errors ----------------------------------------------------------------------------------------------


def test_a_missing_model_is_one_line_and_status_2(tmp_path):
    result = perceptclip("demo", "--model", "/nonexistent", "--port", free_port(), cwd=tmp_path)
    assert_clean_failure(result, "perceptclip demo: error: --model /nonexistent")


def test_bad_options_and_a_missing_gradio_are_one_line_and_status_2(quality_dir, monkeypatch, capsys):
    import importlib.util

    from perceptclip_hf.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", str(quality_dir), "--port", "70000"])
    assert exit_info.value.code == 2 and "--port: must be 1-65535" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["demo", "--model", str(quality_dir), "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot serve there" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "gradio" else find_spec(name, *rest)
    )
    assert main(["demo", "--model", str(quality_dir)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "pip install 'perceptclip-hf[demo]'" in errors[0], errors
