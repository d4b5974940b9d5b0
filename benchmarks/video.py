"""Video tracking: served (VideoTracking through a gateway, Triton and Redis) against
SAM2VideoPredictor in-process on the same weights, side by side in one run.

    .venv/bin/python benchmarks/video.py                          # sam2.1_hiera_t, S=1024, 8 frames
    .venv/bin/python benchmarks/video.py --frames 12 --objects 1,4
    .venv/bin/python benchmarks/video.py --skip-speed              # the bytes and the hostile calls only

Speed (full-size architecture, random weights, a synthetic video of moving shapes): for 1 and
for N objects clicked on frame 0, the reference's propagate_in_video (its image encoder runs on
every frame, then each object in turn) against the served Propagate of a session whose frames
were embedded when they were added (AddFrames), and against AddFrames + Propagate (the
encoder included, as the reference pays it). Each side runs in turn, the medians of --repeats
runs. The reference's own encoder time per frame is measured too: its tracking time is the rest.

Bytes (the scaled model, S=256: the ratios do not depend on S): what a WINDOW session holds in
the state Redis per object after 50 and after 200 tracked frames, against the reference's state
of one frame (its compact output: memory, logits, pointer) times num_maskmem.

Hostile: what the service answers, and how fast, to a file claiming far more frames than
allowed, a corrupt MP4, a 16k x 16k frame, and objects past the limit.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import local_stack  # noqa: E402


def video_predictor(loaded):
    from build_engines.sam2_models import video_predictor_of

    return video_predictor_of(loaded)


def stub(gw):
    import grpc

    from samserve.v1 import samserve_pb2_grpc as pb_grpc

    return pb_grpc.VideoTrackingStub(
        grpc.insecure_channel(gw.target, options=[("grpc.max_receive_message_length", 1 << 30)])
    )


def add_frames(s, jpegs: list[bytes], mode) -> str:
    from samserve.v1 import samserve_pb2 as pb

    sid = s.StartVideoSession(pb.StartVideoSessionRequest(mode=mode)).session_id
    s.AddFrames(iter([pb.AddFramesRequest(session_id=sid if i == 0 else "", image=j) for i, j in enumerate(jpegs)]))
    return sid


def click_objects(s, sid: str, points: list[tuple[float, float]]) -> None:
    from samserve.v1 import samserve_pb2 as pb

    for k, (x, y) in enumerate(points):
        s.AddPrompt(
            pb.AddPromptRequest(session_id=sid, frame_index=0, object_id=k + 1, points=[pb.Point(x=x, y=y, label=1)])
        )


def speed(args) -> None:
    import torch

    from benchmarks.stack import load_model
    from samserve.devtools.sample_videos import moving_shapes, shape_centre, write_jpeg_frames
    from samserve.v1 import samserve_pb2 as pb

    loaded = load_model(args.model)
    predictor = video_predictor(loaded)
    n, h, w = args.frames, 768, 1024
    folder = write_jpeg_frames(moving_shapes(n, h, w, seed=3), Path(tempfile.mkdtemp(prefix="samserve-video-")))
    jpegs = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    counts = [int(c) for c in args.objects.split(",")]
    points = [shape_centre(n, h, w, 3, k % 3, 0) for k in range(max(counts))]
    points = [(x + 7 * (k // 3), y) for k, (x, y) in enumerate(points)]
    with local_stack(loaded, prefix="samserve-bench-video-") as stack:
        s = stub(stack.gateways[0])
        print(f"{args.model}: S={loaded.img_size}, {n} frames of {w}x{h}, served: {stack.repository}")
        rows = []
        for objects in counts:
            ref_ms, enc_ms, prop_ms, add_ms = [], [], [], []
            for r in range(args.repeats):
                # the reference: init_state, clicks, propagate (its encoder on every frame)
                with torch.inference_mode():
                    state = predictor.init_state(str(folder))
                    for k in range(objects):
                        predictor.add_new_points_or_box(state, 0, k + 1, points=[points[k]], labels=[1])
                    t = time.perf_counter()
                    for _ in predictor.propagate_in_video(state):
                        pass
                    ref_ms.append((time.perf_counter() - t) * 1e3 / n)
                    x = state["images"][1:2].float()
                    t = time.perf_counter()
                    predictor.forward_image(x)
                    enc_ms.append((time.perf_counter() - t) * 1e3)
                time.sleep(0.5)
                # served: frames embedded on AddFrames (new frames: another session's cache entries
                # would make them free), then Propagate
                shifted = _touch(jpegs, r + 100 * objects)
                t = time.perf_counter()
                sid = add_frames(s, shifted, pb.SESSION_MODE_WINDOW)
                add_ms.append((time.perf_counter() - t) * 1e3 / n)
                click_objects(s, sid, points[:objects])
                t = time.perf_counter()
                results = list(s.Propagate(pb.PropagateRequest(session_id=sid)))
                prop_ms.append((time.perf_counter() - t) * 1e3 / n)
                assert len(results) == n
                s.CloseSession(pb.VideoSessionRef(session_id=sid))
                time.sleep(0.5)
            ref, enc = statistics.median(ref_ms), statistics.median(enc_ms)
            prop, add = statistics.median(prop_ms), statistics.median(add_ms)
            rows.append((objects, ref, enc, prop, add))
        print("\nper frame, medians (ms)")
        print(f"{'objects':>7} {'reference':>10} {'its encoder':>11} {'served propagate':>16} {'served add+prop':>15} "
              f"{'ratio':>6} {'ratio w/ enc':>12} {'per object':>10}")  # fmt: skip
        for objects, ref, enc, prop, add in rows:
            tracking = max(ref - enc, 1e-3)
            print(
                f"{objects:7d} {ref:10.0f} {enc:11.0f} {prop:16.0f} {add + prop:15.0f} "
                f"{prop / tracking:6.2f} {(add + prop) / ref:12.2f} {prop / tracking:10.2f}"
            )
        print(
            "ratio: served propagate / the reference's tracking (its time less its encoder's); ratio w/ enc: "
            "AddFrames + Propagate / propagate_in_video; per object: the ratio at that object count"
        )


def _touch(jpegs: list[bytes], salt: int) -> list[bytes]:
    """The same frames as other files (a JPEG comment segment): new cache entries, same pixels."""
    out = []
    for j in jpegs:
        comment = b"\xff\xfe" + (len(str(salt)) + 2).to_bytes(2, "big") + str(salt).encode()
        out.append(j[:2] + comment + j[2:])
    return out


def window_bytes(args) -> None:
    import redis

    from build_engines.sam2_models import build_sam2_model
    from samserve.devtools.sample_videos import moving_shapes, shape_centre
    from samserve.v1 import samserve_pb2 as pb

    loaded = build_sam2_model("sam2.1_scaled", seed=1)
    predictor = video_predictor(loaded)
    with local_stack(loaded, prefix="samserve-bench-window-") as stack:
        s = stub(stack.gateways[0])
        h, w = 144, 192
        sizes = {}
        for frames in (50, 200):
            video = moving_shapes(frames, h, w, seed=5)
            buf = []
            for f in video:
                from PIL import Image

                b = io.BytesIO()
                Image.fromarray(f).save(b, format="JPEG", quality=90)
                buf.append(b.getvalue())
            sid = add_frames(s, buf, pb.SESSION_MODE_WINDOW)
            click_objects(s, sid, [shape_centre(frames, h, w, 5, 0, 0)])
            for _ in s.Propagate(pb.PropagateRequest(session_id=sid)):
                pass
            r = redis.Redis.from_url(stack.state.url)
            outputs = sum(len(v) for v in r.hvals(f"samserve:video:{sid}:outputs"))
            meta = len(r.get(f"samserve:video:{sid}:meta"))
            sizes[frames] = (outputs, meta)
        e, low = predictor.image_size // 16, predictor.image_size // 4
        per_frame = predictor.mem_dim * e * e * 2 + low * low * 4 + predictor.hidden_dim * 4 + 4
        bound = per_frame * predictor.num_maskmem
        print(f"\nWINDOW session, one object, S={predictor.image_size}: state Redis bytes")
        print(f"{'frames':>6} {'outputs':>10} {'skeleton':>9} {'reference frame x num_maskmem':>30} {'ratio':>6}")
        for frames, (outputs, meta) in sizes.items():
            print(f"{frames:6d} {outputs:10d} {meta:9d} {bound:30d} {outputs / bound:6.2f}")
        print("(the frames' own images are held too, as AddFrames sent them: the sources to embed a lost frame again)")


def hostile(args) -> None:
    import grpc

    from build_engines.sam2_models import build_sam2_model
    from samserve.devtools.sample_images import encode
    from samserve.devtools.sample_videos import moving_shapes, mp4
    from samserve.v1 import samserve_pb2 as pb

    loaded = build_sam2_model("sam2.1_scaled", seed=1)
    with local_stack(loaded, prefix="samserve-bench-hostile-") as stack:
        s = stub(stack.gateways[0])
        frames = moving_shapes(12, 64, 96, seed=1)
        too_long = mp4(frames * 200)  # 2400 frames: over video_max_frames (2000), refused from its header
        corrupt = bytearray(mp4(frames))
        corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 4096] = b"\x00" * 4096
        huge = encode(np.zeros((16384, 16384, 3), np.uint8), "PNG")
        cases = [
            ("2400-frame MP4", lambda: s.StartVideoSession(pb.StartVideoSessionRequest(video=too_long))),
            ("corrupt MP4", lambda: s.StartVideoSession(pb.StartVideoSessionRequest(video=bytes(corrupt)))),
        ]
        sid = s.StartVideoSession(pb.StartVideoSessionRequest()).session_id
        cases.append(("16k x 16k frame", lambda: s.AddFrames(iter([pb.AddFramesRequest(session_id=sid, image=huge)]))))
        small = add_frames(s, [encode(f, "JPEG") for f in frames[:2]], pb.SESSION_MODE_WINDOW)

        def many_objects():
            for k in range(1000):
                s.AddPrompt(
                    pb.AddPromptRequest(
                        session_id=small, frame_index=0, object_id=k, points=[pb.Point(x=5, y=5, label=1)]
                    )
                )

        cases.append(("1000 objects", many_objects))
        print("\nhostile calls")
        for name, call in cases:
            t = time.perf_counter()
            try:
                call()
                outcome = "OK"
            except grpc.RpcError as exc:
                outcome = f"{exc.code().name}: {exc.details()[:110]}"
            print(f"  {name:16s} {(time.perf_counter() - t) * 1e3:8.0f} ms  {outcome}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--objects", default="1,4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not args.skip_speed:
        speed(args)
    window_bytes(args)
    hostile(args)


if __name__ == "__main__":
    main()
