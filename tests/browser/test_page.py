"""The click-to-segment page in a real browser: what the overlay shows is, pixel for pixel,
the mask the API returns for the same prompt (clicks, a box, a negative click, segment
everything), and the downloads hold those masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samserve.client import PromptSpec, SamClient
from samserve.core.polygons import PolygonPart, polygons_to_mask

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "shapes_1.png"
STAR = (165, 130)  # inside the star of shapes_1.png (x, y)
IDLE = "window.samserve.busy === 0"


@pytest.fixture
def api(trained_gateway):
    with SamClient(trained_gateway.target, timeout_s=300) as c:
        yield c


def overlay(page) -> np.ndarray:
    """The mask canvas: (H, W) bool where anything is painted, and its RGBA."""
    h, w = page.evaluate("window.samserve.size")
    rgba = page.evaluate(
        """() => { const c = document.getElementById('mask');
                   return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"""
    )
    rgba = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)
    return rgba[..., 3] > 0, rgba


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#marks").bounding_box()
    h, w = page.evaluate("window.samserve.size")
    return box["x"] + x * box["width"] / w, box["y"] + y * box["height"] / h


def open_example(page) -> None:
    page.set_input_files("#file", str(EXAMPLE))
    page.wait_for_function(f"window.samserve.imageId !== null && window.samserve.size !== null && {IDLE}")


def sent_prompt(page) -> PromptSpec:
    prompt = page.evaluate("window.samserve.lastRequest").get("prompts")[0]
    points = [(p["x"], p["y"]) for p in prompt.get("points", [])]
    labels = [p["label"] for p in prompt.get("points", [])]
    box = prompt.get("box")
    return PromptSpec(
        points=points, labels=labels, box=None if box is None else tuple(box[k] for k in ("x0", "y0", "x1", "y1"))
    )


def check_overlay_is_the_api_mask(page, api) -> np.ndarray:
    """The overlay equals the best of the three masks the API returns for the prompt the page
    sent, and the three choices show the API's scores."""
    data = EXAMPLE.read_bytes()
    seg = api.segment(data, [sent_prompt(page)])
    scores = seg.prompts[0].iou_predictions
    best = int(scores.argmax())
    want = seg.prompts[0].masks[best]
    shown, _ = overlay(page)
    assert want.sum() > 0
    assert shown.sum() == want.sum()
    assert (shown & want).sum() / (shown | want).sum() == 1.0
    choices = page.locator("#choices button").all_inner_texts()
    assert choices == [f"mask {i + 1} ({s:.3f})" for i, s in enumerate(scores)]
    assert page.locator("#choices button.selected").inner_text().startswith(f"mask {best + 1} ")
    return want


def test_a_click_a_box_and_a_negative_click(page, api, artifacts, trained_gateway):
    open_example(page)
    model_id = api.list_models().models[0].model_id
    assert page.inner_text("#model-id") == model_id  # which model answers
    page.mouse.click(*to_screen(page, *STAR))
    page.wait_for_function(f"window.samserve.result !== null && {IDLE}")
    (x, y), *_ = sent_prompt(page).points
    assert abs(x - STAR[0]) <= 1 and abs(y - STAR[1]) <= 1  # the click, in image pixels
    star = check_overlay_is_the_api_mask(page, api)
    assert "segment:" in page.inner_text("#log") and " ms" in page.inner_text("#log")  # how long each call took
    page.screenshot(path=artifacts / "page-click.png")

    # the mask PNG download is the mask shown
    with page.expect_download() as d:
        page.click("#download-png")
    png = np.asarray(Image.open(d.value.path()).convert("L")) > 127
    assert np.array_equal(png, star)
    # the COCO JSON download decodes (pycocotools) to it too
    with page.expect_download() as d:
        page.click("#download-coco")
    coco = json.loads(Path(d.value.path()).read_text())
    ann = coco["annotations"][0]
    assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), star)
    assert ann["area"] == int(star.sum()) and coco["images"][0]["width"] == 320
    # the polygons download rasterises back to it
    with page.expect_download() as d:
        page.click("#download-polygons")
    parts = json.loads(Path(d.value.path()).read_text())["masks"][0]["polygons"]["parts"]
    decoded = [
        PolygonPart(
            np.asarray(p["exterior"]["xy"], np.int32), [np.asarray(h["xy"], np.int32) for h in p.get("holes", [])]
        )
        for p in parts
    ]
    assert np.array_equal(polygons_to_mask(decoded, 256, 320), star)  # exact at tolerance 0

    # a box drawn by dragging, around the star with a margin
    ys, xs = np.nonzero(star)
    x0, y0, x1, y1 = xs.min() - 6, ys.min() - 6, xs.max() + 6, ys.max() + 6
    page.click("#clear")
    page.mouse.move(*to_screen(page, x0, y0))
    page.mouse.down()
    page.mouse.move(*to_screen(page, (x0 + x1) / 2, (y0 + y1) / 2), steps=4)
    page.mouse.move(*to_screen(page, x1, y1), steps=4)
    page.mouse.up()
    page.wait_for_function(f"window.samserve.result !== null && {IDLE}")
    prompt = sent_prompt(page)
    assert prompt.points == [] and np.allclose(prompt.box, (x0, y0, x1, y1), atol=1.5)
    check_overlay_is_the_api_mask(page, api)
    page.screenshot(path=artifacts / "page-box.png")

    # a right click adds a negative point to the box
    page.mouse.click(*to_screen(page, x0 + 8, y0 + 8), button="right")
    page.wait_for_function(f"window.samserve.lastRequest.prompts[0].points.length === 1 && {IDLE}")
    assert sent_prompt(page).labels == [0]
    check_overlay_is_the_api_mask(page, api)


def test_segment_everything(page, api, artifacts):
    open_example(page)
    page.select_option("#grid", "8")
    page.click("#everything")
    page.wait_for_function(f"window.samserve.records !== null && {IDLE}", timeout=180_000)
    records = api.generate_masks(EXAMPLE.read_bytes(), points_per_side=8)
    assert len(records) > 0
    assert page.inner_text("#status") == f"{len(records)} masks"
    union = np.zeros((256, 320), bool)
    for r in records:
        union |= r.segmentation
    shown, rgba = overlay(page)
    assert np.array_equal(shown, union)
    # each mask its own colour: the smallest, drawn last, shows its colour on all its pixels
    smallest = min(records, key=lambda r: r.area).segmentation
    colours = {tuple(c) for c in rgba[smallest][:, :3]}
    assert len(colours) == 1
    page.screenshot(path=artifacts / "page-everything.png")
    # the COCO JSON download holds every record, decodable by pycocotools
    with page.expect_download() as d:
        page.click("#download-coco")
    anns = json.loads(Path(d.value.path()).read_text())["annotations"]
    assert sorted(a["area"] for a in anns) == sorted(r.area for r in records)
    got = sorted((mask_utils.decode(a["segmentation"]).astype(bool) for a in anns), key=lambda m: m.sum())
    want = sorted((r.segmentation for r in records), key=lambda m: m.sum())
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_bad_input_is_shown_not_thrown(page, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a PNG")
    page.set_input_files("#file", str(bad))
    page.wait_for_function(f"document.getElementById('status').classList.contains('error') && {IDLE}")
    assert page.inner_text("#status").startswith("INVALID_ARGUMENT: ")
    assert len(page.errors) == 1 and "400" in page.errors[0]  # the browser's own log of the 400
    page.errors.clear()


def test_the_page_runs_under_its_content_security_policy(browser, trained_gateway):
    """The other tests bypass the policy (Playwright's waits evaluate script text); here it
    holds: the page loads, embeds and segments with no violation and no error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(trained_gateway.http_url + "/")
    page.locator("#model option").first.wait_for(state="attached")
    page.set_input_files("#file", str(EXAMPLE))
    page.locator("#stage:not(.empty)").wait_for()
    page.locator("#everything:not([disabled])").wait_for()
    box = page.locator("#marks").bounding_box()
    page.mouse.click(box["x"] + STAR[0] * box["width"] / 320, box["y"] + STAR[1] * box["height"] / 256)
    page.locator("#choices button.selected").wait_for()
    context.close()
    assert errors == []
