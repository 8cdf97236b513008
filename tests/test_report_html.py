"""The review page of `ust predict --report` (ust.detector.report), opened in a real headless
browser: Debian's chromium and chromedriver driven by selenium (`make test` installs them; the
browser tests skip, saying why, only where one of the three is missing, and fail instead when
UST_REQUIRE_BROWSER=1). Checked: every image is listed, the threshold slider re-labels and counts,
the name filter and the "anomalous only" box hide items, and the page needs nothing but itself."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

# `ust fit` once for this module, with the fixtures and helpers of the command-line tests
from test_cli_detector import model, predict_argv, read_csv, setup  # noqa: F401

from ust.cli import main
from ust.detector import Detector
from ust.detector.report import ReportItem, write_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
THRESHOLD = 1.0
VALUE_RANGE = (0.0, 2.0)


def _missing_browser() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing (`make browser`, or apt-get install chromium chromium-driver)"
    return ""


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium session (skips when chromium, chromedriver or selenium is missing)."""
    reason = _missing_browser()
    if reason:
        if os.environ.get("UST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"UST_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"no headless browser: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def make_items() -> list[ReportItem]:
    """Nine images of various kinds and sizes, scores spread around THRESHOLD."""
    rng = np.random.default_rng(0)
    items = []
    for i, score in enumerate([0.2, 0.5, 0.8, 0.95, 1.0, 1.05, 1.4, 1.9, 3.0]):
        h, w = 24 + 2 * i, 30 - i
        amap = rng.random((h, w)) * score
        amap.flat[rng.integers(amap.size)] = score  # the image score is the map's maximum
        kind = "bad" if score > THRESHOLD else "good"
        image: object = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i == 3:
            image = torch.rand(1, h, w)  # a grayscale tensor
        elif i == 5:
            image = rng.random((h, w))  # a float gray array
        items.append(ReportItem(f"{kind}/{i:03d}", score, image, anomaly_map=amap))
    items.append(ReportItem('odd <name> & "quotes"', 0.1, np.zeros((8, 8, 3), np.uint8)))
    items[-1].overlay = np.full((8, 8, 3), 200, np.uint8)  # a ready overlay
    return items


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    items = make_items()
    write_report(path, items, THRESHOLD, title="test report", value_range=VALUE_RANGE)
    return path, items


def open_page(driver, path: Path):
    driver.get(path.absolute().as_uri())
    driver.execute_script("return document.readyState")


def shown_names(driver) -> list[str]:
    items = driver.find_elements("css selector", ".item")
    return [i.get_attribute("data-name") for i in items if i.is_displayed()]


def counts(driver) -> tuple[int, int, int]:
    def number(element_id):
        return int(driver.find_element("id", element_id).text)

    return number("count-anomalous"), number("count-accepted"), number("count-shown")


def set_threshold(driver, value: float) -> None:
    driver.execute_script(
        "const s = document.getElementById('threshold'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        repr(float(value)),
    )


# ------------------------------------------------------------------------------- in the browser
def test_every_image_is_listed_by_score_with_its_pictures(browser, report):
    path, items = report
    open_page(browser, path)
    listed = browser.find_elements("css selector", ".item")
    assert len(listed) == len(items)
    names = [e.get_attribute("data-name") for e in listed]
    by_score = sorted(items, key=lambda i: -i.score)
    assert names == [i.name for i in by_score]  # highest score first
    for element, item in zip(listed, by_score):
        assert item.name in element.text and f"score {item.score:.6g}" in element.text
        assert element.find_element("css selector", ".decision").text == (
            "anomalous" if item.score > THRESHOLD else "accepted"
        )
        pictures = element.find_elements("css selector", "img")
        assert len(pictures) == 2  # the image and its overlay, decoded by the browser
        assert all(
            browser.execute_script("return arguments[0].naturalWidth", p) > 0 for p in pictures
        )
    n_bad = sum(i.score > THRESHOLD for i in items)  # 1.0 itself is accepted: score > threshold
    assert counts(browser) == (n_bad, len(items) - n_bad, len(items))
    slider = browser.find_element("id", "threshold")
    assert float(slider.get_attribute("value")) == THRESHOLD
    assert float(slider.get_attribute("min")) < min(i.score for i in items)
    assert float(slider.get_attribute("max")) > max(i.score for i in items)


@pytest.mark.parametrize("t", [0.0, 0.5, 0.9, 1.0, 1.2, 2.5, 3.5])
def test_slider_relabels_and_counts(browser, report, t):
    path, items = report
    open_page(browser, path)
    set_threshold(browser, t)
    expected = sum(i.score > t for i in items)
    assert counts(browser) == (expected, len(items) - expected, len(items))
    labels = {
        e.get_attribute("data-name"): e.find_element("css selector", ".decision").text
        for e in browser.find_elements("css selector", ".item")
    }
    assert labels == {i.name: "anomalous" if i.score > t else "accepted" for i in items}
    browser.find_element("id", "reset").click()
    assert float(browser.find_element("id", "threshold").get_attribute("value")) == THRESHOLD
    n_bad = sum(i.score > THRESHOLD for i in items)
    assert counts(browser)[0] == n_bad


def test_name_filter_and_anomalous_only_hide_items(browser, report):
    path, items = report
    open_page(browser, path)
    browser.find_element("id", "name-filter").send_keys("GOOD/")  # typed, case-insensitive
    good = [i.name for i in sorted(items, key=lambda i: -i.score) if i.name.startswith("good/")]
    assert shown_names(browser) == good and counts(browser)[2] == len(good)

    browser.find_element("id", "name-filter").clear()
    browser.execute_script(
        "document.getElementById('name-filter').dispatchEvent(new Event('input'))"
    )
    assert len(shown_names(browser)) == len(items)
    browser.find_element("id", "anomalous-only").click()
    assert sorted(shown_names(browser)) == sorted(i.name for i in items if i.score > THRESHOLD)
    set_threshold(browser, 1.5)  # the box follows the slider
    assert sorted(shown_names(browser)) == sorted(i.name for i in items if i.score > 1.5)
    browser.find_element("id", "name-filter").send_keys("008")
    assert shown_names(browser) == ["bad/008"]


# ------------------------------------------------------------------------------- the file itself
def test_page_is_self_contained(report):
    path, items = report
    text = path.read_text()
    code = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"(?i)https?:|\b(src|href)=\"//|url\(", code)  # nothing fetched
    assert "<link" not in text and "<script src" not in text and "@import" not in text
    sources = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(sources) == 2 * len(items)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "odd &lt;name&gt; &amp; &quot;quotes&quot;" in text  # names are escaped
    assert not list(path.parent.glob(".*.tmp"))  # written atomically


def test_refuses_decisions_that_disagree_with_the_threshold(tmp_path):
    items = make_items()[:2]
    items[0].anomalous = True  # score 0.2 is not > 1.0
    with pytest.raises(ValueError, match="disagrees with score 0.2 > threshold 1"):
        write_report(tmp_path / "r.html", items, THRESHOLD, value_range=VALUE_RANGE)
    with pytest.raises(ValueError, match="anomaly_map and value_range"):
        write_report(tmp_path / "r.html", make_items()[:1], THRESHOLD)
    with pytest.raises(ValueError, match="outside the slider's range"):
        write_report(
            tmp_path / "r.html", make_items(), 5.0, threshold_range=(0, 4), value_range=VALUE_RANGE
        )
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ ust predict --report
def test_predict_report_lists_every_scored_image(setup, model, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "pred"
    assert main(predict_argv(model, setup / "test", out, "--report")) == 0
    page = out / "report.html"
    assert f"report: {page}" in capsys.readouterr().out
    rows = read_csv(out / "scores.csv")
    text = page.read_text()
    assert sorted(re.findall(r'data-name="([^"]*)"', text)) == sorted(r["name"] for r in rows)
    t = Detector.load(model).image_threshold
    value = float(re.search(r'id="threshold"[^>]*value="([^"]*)"', text).group(1))
    assert value == pytest.approx(t, rel=1e-12)
    assert sorted(p.name for p in out.iterdir()) == [
        "maps",
        "overlays",
        "report.html",
        "scores.csv",
    ]

    # without --report the folder is as before
    assert main(predict_argv(model, setup / "test", tmp_path / "plain")) == 0
    assert not (tmp_path / "plain" / "report.html").exists()


def test_predict_report_opens_with_the_decisions_of_scores_csv(browser, setup, model, tmp_path):  # noqa: F811
    out = tmp_path / "pred"
    assert main(predict_argv(model, setup / "test", out, "--report")) == 0
    rows = read_csv(out / "scores.csv")
    open_page(browser, out / "report.html")
    n_bad = sum(r["anomalous"] == "true" for r in rows)
    assert counts(browser) == (n_bad, len(rows) - n_bad, len(rows))
    decisions = {
        e.get_attribute("data-name"): e.find_element("css selector", ".decision").text
        for e in browser.find_elements("css selector", ".item")
    }
    assert decisions == {
        r["name"]: "anomalous" if r["anomalous"] == "true" else "accepted" for r in rows
    }
