"""What the benchmarks share: the model under test and a local stack serving it."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from build_engines import torchvision_compat

torchvision_compat.install()


def load_model(name: str):
    """ "small": the test model (random weights, S=256); "vit_b" / "vit_l" / "vit_h": Meta's
    architecture with random weights (seed 0), S=1024: realistic cost, meaningless masks;
    "vit_t": MobileSAM's, likewise; "sam2.1_hiera_t" / "_s" / ...: SAM 2.1's, likewise."""
    from build_engines.models import LoadedSam, build_small_sam, state_dict_digest
    from samserve.contract import model_id

    if name == "small":
        return build_small_sam()
    if name == "vit_t":
        from build_engines.models import build_mobile_sam

        return build_mobile_sam()
    if name.startswith("sam2"):  # sam2.1_hiera_t, ...: build_sam2's packaged config
        from build_engines.sam2_models import build_sam2_model

        return build_sam2_model(name)
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry[name]().eval()
    return LoadedSam(sam, name, model_id(f"{name}-random", state_dict_digest(sam)), random_weights=True)


@dataclass
class Stack:
    repository: Path
    triton: object  # samserve.devtools.local_servers.TritonServer
    redis: object  # samserve.devtools.local_servers.RedisServer: the embedding cache
    gateways: list  # samserve.devtools.gateway_thread.GatewayThread
    state: object = None  # the state Redis (noeviction): locks, kept logits, video sessions


@contextlib.contextmanager
def local_stack(loaded, gateways: int = 1, prefix: str = "samserve-bench-", precision: str = "fp32") -> Iterator[Stack]:
    """Exports `loaded` to a CPU repository (in `precision` when it passes the gate, else fp32:
    build_info.json says which) and serves it: redis-server (the cache, and the state as serve
    starts them), tritonserver and `gateways` gateway replicas sharing them; everything stops on
    exit."""
    from build_engines.repository import write_cpu_repository
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_redis, start_triton

    work = Path(tempfile.mkdtemp(prefix=prefix))
    repo = write_cpu_repository(loaded, work / "repo", precision=precision)
    with contextlib.ExitStack() as stack:
        redis = start_redis()
        stack.callback(redis.stop)
        state = start_redis(maxmemory="2gb", extra_args=["--maxmemory-policy", "noeviction"])  # as serve does
        stack.callback(state.stop)
        triton = start_triton(repo, work / "triton.log", work)
        stack.callback(triton.stop)
        gws = []
        for _ in range(gateways):
            gw = GatewayThread(gateway_settings(triton.grpc_url, redis.url, state_redis_url=state.url))
            stack.callback(gw.stop)
            gws.append(gw)
        yield Stack(repo, triton, redis, gws, state)
