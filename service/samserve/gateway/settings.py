"""All configuration: SAMSERVE_* environment variables, overridden by CLI flags, validated at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from samserve.contract import MODEL_NAME_PATTERN, ModelType, parse_model_spec
from samserve.core.image import MAX_CONFIGURABLE_PIXELS


def redact_url(url: str | None) -> str | None:
    """The URL with any password (and user name) replaced by ***, in the authority and in the
    query (redis-py also takes ?password=...), for logs and messages."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None or parts.username is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    query = parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, "***" if k.lower() in ("password", "username", "user") else v) for k, v in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not echo a value (a Redis URL's password)
    model_config = SettingsConfigDict(env_prefix="SAMSERVE_", extra="forbid", hide_input_in_errors=True)

    # gateway
    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = pick a free one)")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP/JSON API and the page (0 = pick a free one)")
    http_enabled: bool = True
    http_read_timeout_s: float = Field(60.0, gt=0, description="an HTTP request's body must arrive within this")
    http_min_body_rate: int = Field(
        32 * 1024,
        ge=1,
        description="bytes/s an HTTP body must keep up after its first 2 s; a slower one is refused (408)",
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port (0 = pick a free one)")
    metrics_enabled: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # security
    auth_tokens: str | None = Field(
        None,
        description="comma-separated bearer tokens; when set, samserve.v1 calls need 'authorization: Bearer <token>'",
    )
    tls_cert_file: Path | None = Field(None, description="server certificate (PEM); with tls_key_file enables TLS")
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(None, description="CA for client certificates: requires mutual TLS")

    # backends
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address host:port")
    triton_timeout_s: float = Field(60.0, gt=0, description="upper bound on one Triton call")
    triton_shared_memory: Literal["auto", "on", "off"] = Field(
        "auto",
        description="encoder inputs to Triton through /dev/shm instead of gRPC bytes: auto = when triton_url is "
        "loopback (Triton on this host, e.g. the embedded serve); falls back to bytes whenever it cannot",
    )
    redis_url: str | None = Field("redis://127.0.0.1:6379/0", description="empty to run without the cache")
    state_redis_url: str | None = Field(
        None,
        description="state that must not be lost to cache pressure (single-flight locks, kept logits): a Redis "
        "with maxmemory-policy noeviction; unset: the cache's Redis (then nothing may be evicted there either)",
    )
    redis_tls_ca_file: Path | None = Field(None, description="CA (PEM) to verify a rediss:// server")
    redis_timeout_s: float = Field(1.0, gt=0)
    redis_retry_after_s: float = Field(2.0, ge=0, description="after a Redis error, skip Redis this long")
    cache_ttl_s: int = Field(24 * 3600, gt=0, description="embedding lifetime in the cache")
    lock_ttl_s: float = Field(30.0, gt=0, description="single-flight lock across replicas")
    logits_ttl_s: int = Field(600, gt=0, description="refinement sessions: how long kept low-res logits live")
    logits_local_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="refinement sessions: logits this process keeps when Redis is off or failing",
    )
    logits_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="keep_low_res_logits: the most one request keeps (32 masks of 256x256); beyond it "
        "RESOURCE_EXHAUSTED before any work",
    )
    logits_client_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="keep_low_res_logits: the most one client keeps alive at once through this gateway "
        "(a quarter of logits_local_bytes: without Redis, one client cannot flush the others' sessions)",
    )

    # limits
    max_request_bytes: int = Field(32 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(
        50_000_000,
        gt=0,
        le=MAX_CONFIGURABLE_PIXELS,
        description="larger images get RESOURCE_EXHAUSTED (checked from the header, before decoding)",
    )
    min_image_side: int = Field(8, ge=1)
    max_prompts_per_request: int = Field(64, ge=1)
    max_points_per_prompt: int = Field(64, ge=1)
    max_concurrent_requests: int = Field(64, ge=1, description="beyond this, RESOURCE_EXHAUSTED")
    max_requests_per_client: int = Field(
        16,
        ge=1,
        description="requests of one client in flight (a client: its bearer token where tokens are set, else "
        "its address); beyond it RESOURCE_EXHAUSTED, so one client cannot take every slot",
    )
    max_concurrent_uploads: int = Field(
        64, ge=1, description="HTTP bodies being received at once (outside the request slots); beyond it 429"
    )
    max_output_mask_pixels: int = Field(
        1 << 28,
        ge=1,
        description="Segment: masks x output pixels per request (64 prompts x 3 masks of a 1.4 MP image); "
        "beyond it RESOURCE_EXHAUSTED before any work",
    )
    max_response_bytes: int = Field(
        256 * 1024 * 1024, ge=1 << 20, description="the largest response the gateway sends (gRPC send limit)"
    )
    amg_max_points: int = Field(
        16384, ge=1, description="GenerateMasks budget: point prompts over all crops; beyond it RESOURCE_EXHAUSTED"
    )
    amg_max_encoder_runs: int = Field(
        21, ge=1, description="GenerateMasks budget: encoder runs, the image and its crops (21: crop_n_layers 2)"
    )
    amg_max_mask_pixels: int = Field(
        1 << 36,
        ge=1,
        description="GenerateMasks budget: mask pixels upsampled at most (3 a prompt, at its crop's size)",
    )
    cpu_workers: int = Field(2, ge=1, description="threads for decode/resize/mask encoding")
    amg_stream_chunk_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="GenerateMasksStream: the most mask bytes in one message"
    )
    embed_many_window: int = Field(8, ge=1, le=1024, description="EmbedMany: images of one stream in flight at once")
    stream_idle_timeout_s: float = Field(
        30.0, gt=0, description="streamed answers: a client that reads nothing this long loses the stream"
    )
    stream_max_s: float = Field(
        900.0, gt=0, description="GenerateMasksStream: the longest a stream (and its request slot) lasts"
    )
    embed_many_max_images: int = Field(1024, ge=1, description="HTTP EmbedMany: images in one upload")

    # video tracking sessions (SAM 2)
    video_session_ttl_s: int = Field(
        3600, gt=0, le=7 * 24 * 3600, description="a video session expires this long after its last call"
    )
    video_max_frames: int = Field(2000, ge=1, description="frames of one video session (and of a video file)")
    video_max_objects: int = Field(64, ge=1, description="objects tracked in one video session")
    video_max_session_bytes: int = Field(
        2 << 30,
        ge=1 << 20,
        description="state one video session holds in the state Redis (memories, masks, its frames' files); a "
        "call that would pass it is RESOURCE_EXHAUSTED before any work",
    )
    video_max_sessions: int = Field(256, ge=1, description="live video sessions over every replica")
    video_max_frame_pixels: int = Field(4096 * 2160, ge=64, description="a video frame's pixels at most")
    video_max_duration_s: float = Field(3600.0, gt=0, description="a video file's duration at most")
    video_local_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="video session state this gateway also keeps in memory (the Redis copy stays the truth)",
    )

    # embedded default (samserve serve)
    embedded: bool = Field(True, description="start local redis-server and tritonserver")
    checkpoint: Path | None = None
    model_type: ModelType = "vit_b"
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="what the embedded models compute in (serve): bf16 runs on AMX / AVX512-BF16 through OpenVINO "
        "when the model passes the accuracy gate, else fp32 (logged); NAME=CHECKPOINT@bf16 sets one model's",
    )
    models: list[str] = Field(
        default_factory=list,
        description="several models (serve): NAME=CHECKPOINT[:TYPE] each, the first the default; "
        'SAMSERVE_MODELS as a JSON list, e.g. ["sam=sam_vit_b_01ec64.pth", "mobile=mobile_sam.pt"]',
    )
    default_model: str | None = Field(
        None, description="the model of requests that name none (unset: the one the repository marks default)"
    )
    cache_dir: Path = Field(Path.home() / ".cache" / "samserve")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise ValueError(f"checkpoint {self.checkpoint} does not exist")
        names = []
        for spec in self.models:
            name, checkpoint, _ = parse_model_spec(spec)
            if self.embedded and not checkpoint.is_file():  # only serve builds from the checkpoints
                raise ValueError(f"model {name}: checkpoint {checkpoint} does not exist")
            names.append(name)
        if self.default_model is not None and not re.fullmatch(MODEL_NAME_PATTERN, self.default_model):
            raise ValueError(f"default_model {self.default_model!r} must match {MODEL_NAME_PATTERN}")
        if self.default_model is not None and names and self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is none of the models {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must differ, got {names}")
        if self.models and self.checkpoint is not None:
            raise ValueError("set either checkpoint (one model) or models (several), not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        for f in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if f is not None and not f.is_file():
                raise ValueError(f"{f} does not exist")
        if self.auth_tokens is not None and not self.tokens():
            raise ValueError("auth_tokens is set but holds no token")
        for name in ("redis_url", "state_redis_url"):
            url = getattr(self, name)
            if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ValueError(f"{name} must be redis://, rediss:// or unix://, got {redact_url(url)!r}")
        if self.state_redis_url and not self.redis_url:
            raise ValueError("state_redis_url is set but redis_url is empty: the state goes with the cache")
        if ":" not in self.triton_url:
            raise ValueError(f"triton_url must be host:port, got {self.triton_url!r}")
        return self

    def tokens(self) -> list[str]:
        return [t.strip() for t in (self.auth_tokens or "").split(",") if t.strip()]
