"""The HTML leaderboard is one self-contained file; in a real headless Chromium its tables sort, its plots decode,
and at 1,400 px the headline and the answer's columns (metric, Δ vs scratch, $/run) are on screen."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers import HANG_GUARD_S, fixture_records, write_store

from transferbench.runners.cli import main

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Page(HTMLParser):
    """Tables (rows of {column key: (data-sort, text)}), images and the body's attributes of an HTML document."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.images, self.body, self._cell, self._in_tbody = [], [], {}, None, False
        self._sortable = False  # the cell tables; the decision table has no sort keys
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "table":
            self._sortable = "sortable" in attrs.get("class", "")
        elif tag == "tbody" and self._sortable:
            self.tables.append([])
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.tables[-1].append({})
        elif tag == "td" and self._in_tbody:
            self._cell = [attrs.get("class", "").split()[0], attrs.get("data-sort"), ""]
        elif tag == "img":
            self.images.append(attrs)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        self._in_tbody = self._in_tbody and tag != "tbody"
        if tag == "td" and self._cell is not None:
            key, sort, text = self._cell
            self.tables[-1][-1][key] = (sort, text)
            self._cell = None


def _report(tmp_path):
    store = write_store(tmp_path / "store", fixture_records())
    assert main(["report", str(store)]) == 0
    return store


def test_page_is_self_contained_and_shows_the_leaderboard_numbers(tmp_path):
    store = _report(tmp_path)
    text = (store / "leaderboard.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch: works offline
    page = Page(text)
    (rows,) = page.tables
    cells = json.loads((store / "leaderboard.json").read_text())["cells"]
    assert len(rows) == len(cells)
    for row, cell in zip(rows, cells):
        assert row["mode"][1] == cell["mode"] and row["budget"][1] == str(cell["train_samples"])
        assert (row["metric"][0] == "") == (cell["metric_mean"] is None)
        if cell["metric_mean"] is not None:
            assert float(row["metric"][0]) == cell["metric_mean"]  # full precision sort key
    assert len(page.images) == 4 and all(img["src"].startswith("data:image/png;base64,") for img in page.images)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install chromium)")
def test_chromium_renders_sorts_and_shows_the_plots(tmp_path):
    store = _report(tmp_path)
    url = (store / "leaderboard.html").resolve().as_uri() + "#sort=metric-desc"

    def chromium(*args):
        profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
        proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=HANG_GUARD_S)
        shutil.rmtree(profile, ignore_errors=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    page = Page(chromium("--dump-dom"))
    assert page.body.get("data-sortable") == "ready"  # the inline script ran
    (rows,) = page.tables
    metrics = [float(r["metric"][0]) for r in rows if r["metric"][0]]
    assert metrics == sorted(metrics, reverse=True) and len(metrics) == 6  # sorted by the #sort=metric-desc link
    assert [r["mode"][1] for r in rows[:2]] == ["finetune", "scratch"]  # 0.93 then 0.92 at 256 examples
    assert [r["metric"][1] for r in rows[-2:]] == ["failed (1 run): seed 0: failed: RuntimeError: boom",
                                                   "no eval (1 run)"]  # no number: last
    assert len(page.images) == 4 and all(int(img["data-width"]) == 750 for img in page.images)  # decoded PNGs

    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,2000")
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 2000)
        colors = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colors) > 50  # text, tables and plots, not a blank page


# Appended to a copy of the page: the layout as Chromium computed it, written into the DOM for --dump-dom to return.
MEASURE = """<script>
const box = el => { const b = el.getBoundingClientRect();
  return {left: b.left, right: b.right, top: b.top, bottom: b.bottom, width: b.width, height: b.height}; };
const m = {vw: innerWidth, vh: innerHeight, page_width: document.documentElement.scrollWidth};
m.decision = box(document.querySelector("#decision li"));  // the first screen, as the page opens
m.decision_text = document.querySelector("#decision").innerText;
m.folded = !document.querySelector("#details").open;
document.querySelector("#details").open = true;  // the fold opens on a click: the cell table's columns
const cost = document.querySelector('th[data-col="cost"]'), train = document.querySelector('th[data-col="train"]');
const scroll = cost.closest(".scroll");
scroll.scrollIntoView();
for (const [name, el] of [["headline", document.querySelector("#headline")], ["cost", cost], ["scroll", scroll],
    ["delta", document.querySelector('th[data-col="delta"]')], ["metric", document.querySelector('th[data-col="metric"]')],
    ["train", train]]) m[name] = box(el);
m.headline_text = document.querySelector("#headline").innerText;
m.overflow = scroll.scrollWidth - scroll.clientWidth;
document.querySelector(".more").click();  // the secondary columns unfold
m.train_open = box(train);
document.body.dataset.measured = JSON.stringify(m);
</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install chromium)")
def test_headline_and_cost_column_are_visible_at_1400_px(tmp_path):
    store = _report(tmp_path)
    page = tmp_path / "measured.html"
    page.write_text((store / "leaderboard.html").read_text().replace("</body>", MEASURE + "</body>"))
    profile = tmp_path / "profile"
    proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000",
                           "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=HANG_GUARD_S)
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(Page(proc.stdout).body["data-measured"])
    assert m["vw"] == 1400

    def inside(name, right=m["vw"]):
        b = m[name]
        return b["width"] > 0 and b["height"] > 0 and 0 <= b["left"] and b["right"] <= right and 0 <= b["top"] \
            and b["bottom"] <= m["vh"]

    assert m["decision_text"].startswith("topics · m: use lora up to 64 examples (ties the best, 1.7× cheaper), "
                                         "finetune from 256 examples") and inside("decision")
    assert m["folded"]  # the detailed lines wait in the fold
    assert m["headline_text"].startswith("topics, m: finetune ahead")
    # the answer's columns are on screen without scrolling the table sideways: none clipped by its scroll box
    assert m["overflow"] <= 0
    for name in ("metric", "delta", "cost"):
        assert inside(name, right=min(m["vw"], m["scroll"]["right"])), (name, m[name], m["scroll"])
    assert m["metric"]["right"] <= m["delta"]["left"] <= m["cost"]["left"]  # metric, Δ, then cost: first
    assert m["train"]["width"] == 0 and m["train_open"]["width"] > 0  # folded, and unfolds on a click


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian: apt-get install chromium)")
def test_phone_width_opens_with_the_decision_and_no_sideways_scroll(tmp_path):
    """At 390 × 844 (a phone; chromium's --window-size stops at 500 px, so playwright sets the viewport) the first
    screen shows the decision line and the decision table stacks: nothing on the page is wider than the screen."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    store = _report(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto((store / "leaderboard.html").resolve().as_uri())
        width = page.evaluate("document.documentElement.scrollWidth")
        first = page.locator("#decision li").first.bounding_box()
        text = page.inner_text("#decision")
        cells = page.locator("table.decision td").first.bounding_box()
        browser.close()
    assert width <= 390
    assert 0 <= first["x"] and first["x"] + first["width"] <= 390 and 0 < first["y"] < 844
    assert text.startswith("topics · m: use lora up to 64 examples") and cells["width"] <= 390
