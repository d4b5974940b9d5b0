"""The client side: a synchronous Python SDK (`SamClient`), mask overlays, and the `samserve` CLI."""

from samserve.client.sdk import (
    AmgRecord,
    PromptMasks,
    PromptSpec,
    SamClient,
    Segmentation,
    amg_records_from_pb,
    decode_mask,
    segmentation_from_pb,
)

__all__ = [
    "AmgRecord",
    "PromptMasks",
    "PromptSpec",
    "SamClient",
    "Segmentation",
    "amg_records_from_pb",
    "decode_mask",
    "segmentation_from_pb",
]
