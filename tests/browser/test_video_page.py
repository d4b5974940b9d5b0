"""The page's video mode in a real browser, on a SAM 2 model that tracks: open the frames of a
video, click an object, propagate, scrub; the overlay on a propagated frame is, pixel for pixel,
the mask the API returns for it (the same frames and click through the SDK), and the COCO JSON
download holds those masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samserve.client import SamClient
from samserve.devtools.sample_videos import shape_centre
from tests.browser.test_page import overlay, to_screen
from tests.support.sam2_video import served_video_repository

T, H, W, SEED = 8, 144, 192, 11
IDLE = "window.samserve.busy === 0"


@pytest.fixture(scope="module")
def video_gateway(tmp_path_factory, cache_dir, redis_server):
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_redis, start_triton

    work = tmp_path_factory.mktemp("video-page")
    _, folder, repo = served_video_repository(work, SEED, T, H, W)
    triton = start_triton(repo, work / "triton.log", cache_dir)
    state = start_redis(maxmemory="256mb", extra_args=["--maxmemory-policy", "noeviction"])
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url, state_redis_url=state.url))
    try:
        yield gw, folder
    finally:
        gw.stop()
        triton.stop()
        state.stop()


@pytest.fixture
def video_page(browser, video_gateway):
    gw, _ = video_gateway
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(gw.http_url + "/")
    pg.wait_for_function("document.querySelector('#model').options.length > 0")
    yield pg
    context.close()
    assert errors == [], errors


def test_the_overlay_of_a_propagated_frame_is_the_apis_mask(video_page, video_gateway, artifacts):
    page = video_page
    gw, folder = video_gateway
    frames = sorted(folder.glob("*.jpg"))
    page.set_input_files("#video-file", [str(p) for p in frames])
    page.wait_for_function(f"window.samserve.video.sessionId !== null && {IDLE}")
    assert page.evaluate("window.samserve.video.numFrames") == T

    x, y = shape_centre(T, H, W, SEED, 0, 0)
    page.mouse.click(*to_screen(page, x, y))
    page.wait_for_function(f"window.samserve.video.results[0] !== undefined && {IDLE}")
    sent = page.evaluate("window.samserve.video.prompts['0:1']")
    assert len(sent) == 1 and abs(sent[0]["x"] - x) <= 1 and abs(sent[0]["y"] - y) <= 1

    page.click("#video-propagate")
    page.wait_for_function(f"!window.samserve.video.propagating && window.samserve.video.done > 0 && {IDLE}")
    assert page.evaluate("document.getElementById('video-progress').value") == 1

    # the same frames and click through the SDK (another session): the masks the API answers
    with SamClient(gw.target, timeout_s=300) as c:
        session = c.video_session(frames=[p.read_bytes() for p in frames], mode="full")
        session.add_prompt(0, 1, [(sent[0]["x"], sent[0]["y"])], [1])
        api = {f.frame_index: f.objects[1].mask for f in session.propagate(direction="both")}
        session.close()
    shown_any = False
    for frame in (1, 2, 3):
        page.evaluate(
            f"""() => {{ const s = document.getElementById('video-frame'); s.value = '{frame}';
                        s.dispatchEvent(new Event('input')); }}"""
        )
        page.wait_for_function(f"window.samserve.video.frame === {frame}")
        page.wait_for_timeout(100)
        shown, _ = overlay(page)
        assert np.array_equal(shown, api[frame]), f"frame {frame}"
        shown_any |= bool(shown.any())
    assert shown_any  # not vacuous: the object is present on these frames
    page.screenshot(path=artifacts / "page-video.png")

    with page.expect_download() as d:
        page.click("#video-download")
    body = json.loads(Path(d.value.path()).read_text())
    by_frame = {f["frame_index"]: f["annotations"][0] for f in body["frames"]}
    for frame in (1, 2, 3):
        rle = dict(by_frame[frame]["segmentation"])
        rle["counts"] = rle["counts"].encode()
        assert np.array_equal(mask_utils.decode(rle).astype(bool), api[frame])
