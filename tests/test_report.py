"""maekit report: self-contained report.html for a sweep, a compare, a pretraining and a k-NN run, opened in
headless Chromium (Debian's chromium + chromium-driver, driven by selenium): every image loaded, the tables there,
nothing fetched from elsewhere, user strings escaped. Screenshots go to test-artifacts/ (MAEKIT_TEST_ARTIFACTS)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from maekit.cli import main
from maekit.commands import report

from conftest import TINY

ARTIFACTS = Path(os.environ.get("MAEKIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
EVIL = '<script>window.__pwned = 1</script>&"'
CLASS_NAMES = [f"{EVIL}{i}" if i == 0 else f"class <b>{i}</b>" for i in range(10)]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, fmnist_small) -> dict:
    """A tiny sweep (2 cells, then k-NN) and a compare (linear probe + k-NN) reusing one of its cells; names with
    HTML in them: the sweep directory and the class names."""
    root = tmp_path_factory.mktemp("report")
    sweep_dir = root / 'sweep <i>x & "y"'
    names = "[" + ", ".join(json.dumps(n) for n in CLASS_NAMES) + "]"
    args = [
        *TINY,
        f"data.path={fmnist_small}",
        f"data.class_names={names}",
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.epochs=1",
        "knn.labels=100",
        "knn.train.eval_samples=64",
        f"out={sweep_dir}",
    ]
    assert main(["sweep", *args, "--grid", "model.mask_ratio=0.5,0.75", "--then", "knn"]) == 0
    pre = sweep_dir / "cells" / "mask_ratio0.75" / "pretrain"
    assert main(["reconstruct", str(pre), "--n", "4", "--limit", "64"]) == 0
    cmp_dir = root / "compare"
    assert (
        main(
            [
                "compare",
                f"pretrained={pre}",
                f"out={cmp_dir}",
                f"pretrain.data.path={fmnist_small}",
                f"pretrain.data.class_names={names}",
                "budgets=[60]",
                "seeds=[0]",
                "methods=[linprobe, knn]",
                "linprobe.train.epochs=2",
                *[
                    f"{m}.train.{k}"
                    for m in ("linprobe", "knn")
                    for k in ("progress=false", "eval_samples=64", "batch_size=32")
                ],
            ]
        )
        == 0
    )
    return {
        "sweep": sweep_dir,
        "compare": cmp_dir,
        "pretrain": pre,
        "knn": sweep_dir / "cells" / "mask_ratio0.5" / "knn",
    }


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "headless Chromium not found (chromium and chromedriver): run `make test`, which installs the Debian "
            "packages chromium and chromium-driver, or apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for a in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(a)
    d = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def open_report(browser, html: Path, shot: str) -> dict:
    """Load the report; return what the page saw; save a full-page screenshot."""
    browser.set_window_size(1280, 1000)
    browser.get(html.resolve().as_uri())
    state = browser.execute_script(
        "return {images: [...document.images].map(i => ({ok: i.complete, w: i.naturalWidth, alt: i.alt})),"
        " tables: document.querySelectorAll('table').length, title: document.title, text: document.body.innerText,"
        " external: [...document.querySelectorAll('[src],[href],link,script')]"
        ".map(e => e.getAttribute('src') || e.getAttribute('href') || e.tagName)"
        "   .filter(u => !(u.startsWith('data:image/png;base64,') || u.startsWith('#'))),"
        " pwned: window.__pwned === undefined ? null : window.__pwned, height: document.documentElement.scrollHeight}"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, min(int(state["height"]) + 50, 12000))
    browser.save_screenshot(str(ARTIFACTS / shot))
    return state


@pytest.mark.parametrize(
    "kind,tables,texts",
    [
        (
            "sweep",
            2,
            ["Heatmaps", "Loss curves", "Reconstructions", "Confusion matrices", "knn_test_accuracy", "git commit"],
        ),
        ("compare", 3, ["Accuracy vs labels", "linear probe (MAE-pretrained)", "Confusion matrices", "torch threads"]),
        ("pretrain", 3, ["Loss curves", "Per epoch", "Reconstructions", "test_recon_loss"]),
        ("knn", 2, ["Result", "Confusion matrix", "test_accuracy"]),
    ],
)
def test_report_in_headless_chromium(dirs, browser, capsys, kind, tables, texts):
    assert main(["report", str(dirs[kind])]) == 0
    html = dirs[kind] / "report.html"
    assert f"report: {html}" in capsys.readouterr().out
    state = open_report(browser, html, f"report_{kind}.png")
    assert state["images"] and all(i["ok"] and i["w"] > 0 for i in state["images"]), state["images"]
    assert state["tables"] >= tables
    assert state["external"] == []  # everything is inline: nothing to fetch
    assert state["pwned"] is None  # escaped strings do not run
    for t in texts:
        assert t in state["text"], t
    raw = html.read_text()
    assert "<script" not in raw and EVIL not in raw and "<b>1</b>" not in raw and "<i>x" not in raw
    if kind in ("sweep", "compare", "pretrain"):
        # the class name, in the configuration
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&amp;&quot;" in raw
        assert EVIL in state["text"]  # shown as text
    if kind == "sweep":
        assert 'sweep <i>x & "y"' in state["title"]
        n_cells = 2
        assert sum("confusion" in i["alt"] or "knn" in i["alt"] for i in state["images"]) >= n_cells


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a maekit run, compare or sweep directory (no run.json)" in capsys.readouterr().err
    (tmp_path / "run.json").write_text('{"kind": "mystery"}')
    assert main(["report", str(tmp_path)]) == 2
    assert "has kind 'mystery'" in capsys.readouterr().err


def test_report_numbers_and_escaping():
    assert report._number("test_accuracy", 0.78125) == "78.12%"
    assert report._number("loss", "0.123456") == "0.1235" and report._number("labels", "600") == "600"
    assert report._number("cell", "p2<x>") == "p2<x>"  # escaped by table(), not here
    assert "&lt;x&gt;" in report.table(["cell"], [["p2<x>"]])


def test_reconstruction_grid_has_no_blank_band_under_its_title(tmp_path):
    import numpy as np
    from PIL import Image

    from maekit import plots

    cols = {
        name: np.full((8, 1, 28, 28), 0.5, np.float32)
        for name in ("original", "masked", "reconstruction", "recon + visible")
    }
    plots.recon_grid(cols, tmp_path / "grid.png", "test images, mask ratio 0.75, epoch 14")
    img = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    white = (img > 250).all(axis=1)
    longest, run = 0, 0
    for w in white:
        run = run + 1 if w else 0
        longest = max(longest, run)
    assert longest < 0.03 * img.shape[0], f"{longest} blank rows of {img.shape[0]}"
