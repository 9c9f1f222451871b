"""The explorer page in a real browser (Debian's Chromium driven by playwright).

Every test fails on a console error, an uncaught page error or an alert (see the ``page``
fixture), so "no console errors" and "the payload never runs" are checked throughout.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from PIL import Image

from atlas_assets_tests.explorer.conftest import PAYLOAD, PAYLOAD_ID, ExplorerMap

BACKGROUND = np.array([0x14, 0x16, 0x1A])


def _canvas_box(page) -> dict:
    return page.locator("#map").bounding_box()


def _screen(page, index: int) -> tuple[float, float]:
    box = _canvas_box(page)
    x, y = page.evaluate("i => atlasExplorer.screenPosition(i)", index)
    return box["x"] + x, box["y"] + y


def _all_screen(page) -> np.ndarray:
    return np.array(
        page.evaluate(
            "Array.from({length: atlasExplorer.state.n}, (_, i) => atlasExplorer.screenPosition(i))"
        )
    )


def _tags_of(explorer_map: ExplorerMap, name: str) -> list[str]:
    from atlas_assets import AtlasDataset

    return AtlasDataset(explorer_map.dataset).maps[0].tags.get_datums_in_tag(name)


def test_the_map_draws(page, explorer_map: ExplorerMap) -> None:
    shot = Image.open(io.BytesIO(page.locator("#map").screenshot())).convert("RGB")
    pixels = np.asarray(shot).reshape(-1, 3).astype(int)
    painted = (np.abs(pixels - BACKGROUND).max(axis=1) > 30).sum()
    # 301 points of ~6 px diameter: well over a thousand painted pixels; a blank canvas has 0.
    assert painted > 1000, painted
    assert page.inner_text("#dataset-count") == f"{len(explorer_map.ids)} points"


def test_hover_shows_html_payload_as_text(page, explorer_map: ExplorerMap) -> None:
    index = explorer_map.payload_index
    page.evaluate("i => atlasExplorer.scatterplot.zoomToPoints([i], {padding: 3})", index)
    page.wait_for_timeout(300)
    x, y = _screen(page, index)
    hover = page.locator("#hover")
    for dx in (0, 1, -1, 2):  # the spatial index may still be building on the first move
        page.mouse.move(x + dx, y)
        try:
            hover.get_by_text(PAYLOAD_ID).wait_for(timeout=2000)
            break
        except Exception:
            continue
    text = hover.inner_text()
    assert PAYLOAD_ID in text and PAYLOAD in text
    assert page.locator("#hover img, #hover script").count() == 0
    assert page.evaluate("document.querySelectorAll('img').length") == 0


def test_search_finds_a_known_datum(page, explorer_map: ExplorerMap) -> None:
    page.fill("#search-input", "pebble game")
    page.press("#search-input", "Enter")
    first = page.locator("#results li").first
    first.wait_for()
    assert "0704.0002" in first.inner_text()
    assert page.evaluate("atlasExplorer.state.selection") == [explorer_map.ids.index("0704.0002")]
    assert page.inner_text("#selection-count") == "1 point"

    page.select_option("#search-mode", "semantic")
    page.fill("#search-input", "sparse graphs and rigidity")
    page.press("#search-input", "Enter")
    page.wait_for_function(
        "document.querySelector('#results li .rid').textContent.includes('distance')"
    )
    assert "0704.0002" in page.inner_text("#results")


def test_lasso_selection_tagged_in_the_page_is_read_back(page, explorer_map: ExplorerMap) -> None:
    page.click("#modes button[data-mode='lasso']")
    box = _canvas_box(page)
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["height"] * 0.35
    # A 12-gon, left open: the library closes it, and a lasso ending on its starting pixel
    # would count as a click on the point under it.
    corners = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 13)]
    corners = corners[:-1]
    page.mouse.move(corners[0][0] + 3, corners[0][1])
    page.mouse.down()
    page.mouse.move(*corners[0])  # the library starts the shape at the first move, not the press
    page.wait_for_timeout(30)
    for x, y in corners[1:]:
        page.mouse.move(x, y, steps=2)
        page.wait_for_timeout(20)
    page.wait_for_timeout(100)  # the library drops moves still being debounced at mouse-up
    page.mouse.up()
    page.wait_for_function("atlasExplorer.state.selection.length > 0")
    selected = page.evaluate("atlasExplorer.state.selection")

    # The lasso took the points inside the drawn polygon (a 12-gon, so test the inscribed circle).
    inside = np.hypot(*(_all_screen(page) + [box["x"], box["y"]] - [cx, cy]).T)
    assert set(np.flatnonzero(inside < r * 0.95)) <= set(selected)
    assert set(selected) <= set(np.flatnonzero(inside < r * 1.02))

    page.fill("#tag-name", "lasso-pick")
    page.click("#tag-add")
    page.locator("#tags").get_by_text("lasso-pick").wait_for()
    assert _tags_of(explorer_map, "lasso-pick") == sorted(explorer_map.ids[i] for i in selected)


def test_rectangle_selection_and_export(page, explorer_map: ExplorerMap) -> None:
    page.click("#modes button[data-mode='rectangle']")
    box = _canvas_box(page)
    x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2
    x1, y1 = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.8
    page.mouse.move(x0 - 3, y0 - 3)
    page.mouse.down()
    page.mouse.move(x0, y0)  # the library starts the shape at the first move, not at the press
    page.wait_for_timeout(30)
    page.mouse.move(x1, y1, steps=10)
    page.wait_for_timeout(100)  # the library drops moves still being debounced at mouse-up
    page.mouse.up()
    page.wait_for_function("atlasExplorer.state.selection.length > 0")
    selected = set(page.evaluate("atlasExplorer.state.selection"))
    xy = _all_screen(page) + [box["x"], box["y"]]

    def within(margin: float) -> set[int]:
        keep = (
            (xy[:, 0] > x0 + margin)
            & (xy[:, 0] < x1 - margin)
            & (xy[:, 1] > y0 + margin)
            & (xy[:, 1] < y1 - margin)
        )
        return set(np.flatnonzero(keep).tolist())

    assert within(4) <= selected <= within(-4)

    with page.expect_download() as download:
        page.click("#export-csv")
    as_text = pacsv.ConvertOptions(column_types={"arxiv_id": pa.string()})
    table = pacsv.read_csv(download.value.path(), convert_options=as_text)
    assert sorted(table.column("arxiv_id").to_pylist()) == sorted(
        explorer_map.ids[i] for i in selected
    )


def test_topic_labels_change_with_zoom(page, explorer_map: ExplorerMap) -> None:
    topics = page.evaluate("atlasExplorer.state.meta.topics")
    by_depth: dict[int, set[str]] = {}
    for topic in topics:
        by_depth.setdefault(topic["depth"], set()).add(topic["label"])
    # The fixture's map has topics at two depths or more, and some depth-1 topic splits.
    assert len(by_depth) >= 2, sorted(by_depth)

    labels = page.locator("#labels .label")
    labels.first.wait_for()
    before = set(labels.all_inner_texts())
    assert before and before <= by_depth[1]
    assert set(
        page.eval_on_selector_all("#labels .label", "ns => ns.map(n => n.dataset.depth)")
    ) == {"1"}

    # Zoom in with the wheel towards the anchor of the biggest depth-2 topic.
    target = max((t for t in topics if t["depth"] == 2), key=lambda t: t["count"])
    box = _canvas_box(page)
    sx, sy = page.evaluate("([x, y]) => atlasExplorer.toScreen(x, y)", [target["x"], target["y"]])
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    for _ in range(40):
        if page.evaluate("atlasExplorer.state.labelDepth") >= 2:
            break
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(60)
    page.wait_for_timeout(200)
    shown = page.eval_on_selector_all(
        "#labels .label", "ns => ns.map(n => [Number(n.dataset.depth), n.textContent])"
    )
    # Depth-2 labels took over; a depth-1 label stays only where that topic has no subtopics.
    parents = {t["parent"] for t in topics if t["depth"] == 2}
    assert any(depth == 2 for depth, _ in shown), shown
    assert all(text in by_depth[depth] for depth, text in shown)
    assert all(text not in parents for depth, text in shown if depth == 1), shown
    assert {text for _, text in shown} != before


def test_the_page_works_behind_a_token(browser, explorer_map: ExplorerMap) -> None:
    """Opened once with ``?token=``, the page's own requests (scripts, data, tagging) carry the
    token in its cookie; without the token nothing loads."""
    from atlas_assets.explorer.server import create_app, url_for
    from atlas_assets_tests.explorer.conftest import running_server

    app = create_app(explorer_map.dataset, token="page-token")
    with running_server(app) as sock:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        problems: list[str] = []
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        refused = tab.goto(url_for(sock))
        assert refused.status == 403 and "token" in tab.content()

        tab.goto(url_for(sock, token="page-token"))
        tab.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert tab.inner_text("#dataset-count") == f"{len(explorer_map.ids)} points"
        tab.fill("#search-input", "pebble game")
        tab.press("#search-input", "Enter")
        tab.locator("#results li").first.wait_for()
        tab.fill("#tag-name", "behind-token")
        tab.click("#tag-add")
        tab.locator("#tags").get_by_text("behind-token").wait_for()
        context.close()
    assert _tags_of(explorer_map, "behind-token") == ["0704.0002"]
    assert not problems, problems
