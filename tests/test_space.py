"""`transferbench report --publish DIR --space SPACE`: a Gradio app over the published folder. It is written only
with --space (gradio is never imported otherwise), carries a Space card and requirements, and, served by
`python SPACE/app.py` offline and driven in headless Chromium (playwright, launched by path), opens with the decision
at 1,400 px and at phone width; picking one benchmark narrows the table, redraws the learning curves and the CSV
download holds that benchmark's cells only."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import HANG_GUARD_S, fixture_records, write_store

from transferbench.runners.cli import main

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]


def _space(tmp_path, records=None):
    store = write_store(tmp_path / "store", records or fixture_records())
    assert main(["report", str(store), "--publish", str(tmp_path / "pub"), "--space", str(tmp_path / "space")]) == 0
    return tmp_path / "pub", tmp_path / "space"


def test_report_imports_gradio_only_for_a_space(tmp_path):
    store = write_store(tmp_path / "store", fixture_records())
    code = ("import sys; from transferbench.runners.cli import main; "
            f"assert main(['report', {str(store)!r}]) == 0; print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_space_needs_the_published_folder(tmp_path, capsys):
    store = write_store(tmp_path / "store", fixture_records())
    assert main(["report", str(store), "--space", str(tmp_path / "space")]) == 2
    assert "--space serves the folder that --publish writes; add --publish DIR" in capsys.readouterr().err


def test_space_files_are_a_hub_space_reading_the_published_folder(tmp_path):
    pub, space = _space(tmp_path)
    card = (space / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"].startswith("6.")
    assert "gradio>=6.0,<7" in (space / "requirements.txt").read_text().splitlines()
    app = (space / "app.py").read_text()
    assert 'DATA = "../pub"' in app and "import transferbench" not in app  # the folder beside it; standalone
    decisions = json.loads((pub / "decisions.json").read_text())
    board = json.loads((tmp_path / "store" / "leaderboard.json").read_text())
    assert [d["text"] for d in decisions["decisions"]] == [d["text"] for d in board["decisions"]]
    assert decisions["table"][0]["use"].startswith("lora") and decisions["table"][0]["examples"] == "64"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install chromium)")
def test_space_serves_offline_opens_with_the_decision_and_filters(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    records = fixture_records() + [dict(r, run_id=f"other-{r['run_id']}", model="other") for r in fixture_records()]
    pub, space = _space(tmp_path, records)
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, str(space / "app.py")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    shots = Path(os.environ.get("TRANSFERBENCH_SHOTS", tmp_path))
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while True:  # a hang guard, not a timing assertion
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "the Space did not start"
                time.sleep(1)
        outside = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            pages = []
            for width, height in ((1400, 900), (390, 844)):
                page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
                pages.append(page)
                page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
                page.goto(url)
                first = page.locator("#decision li").first
                first.wait_for()
                box = first.bounding_box()
                assert first.inner_text().startswith("topics · m: use lora up to 64 examples")
                assert 0 <= box["x"] and box["x"] + box["width"] <= width and 0 < box["y"] < height  # first screen
                assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
                page.screenshot(path=str(shots / f"space-{width}.png"))
            page = pages[0]
            table, curves = page.locator("#table"), page.locator("#curves img")
            page.wait_for_function("document.querySelector('#table') && "
                                   "document.querySelector('#table').innerText.includes('other')")
            before = curves.get_attribute("src")
            assert "topics · m" in table.inner_text() and "topics · other" in table.inner_text()
            page.get_by_label("topics · other").check()  # one benchmark
            page.wait_for_function("!document.querySelector('#table').innerText.includes('topics · m\\t')"
                                   " && !document.querySelector('#table').innerText.includes('topics · m\\n')")
            assert "topics · other" in table.inner_text()
            page.wait_for_function(f"document.querySelector('#curves img') && "
                                   f"document.querySelector('#curves img').src !== {json.dumps(before)}")
            with page.expect_download() as download:  # the CSV holds what the filters keep
                page.click("#download")
            rows = Path(download.value.path()).read_text().splitlines()
            assert rows[0].startswith("benchmark,task,dataset,model,mode,train_samples")
            assert len(rows) == 1 + 8 and all(r.startswith("topics · other,") for r in rows[1:])
            browser.close()
        assert outside == []  # offline: nothing fetched from anywhere but the app
    finally:
        server.terminate()
        server.wait(timeout=30)
