"""transport/messages.py: limits are checked on the message before it is converted."""

from __future__ import annotations

import pytest

from samserve.core.errors import InvalidInput
from samserve.gateway.transport.messages import prompts_from_pb
from samserve.v1 import samserve_pb2 as pb


class Untouchable(list):
    """A repeated field of a given length whose elements must not be read."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        raise AssertionError("the points were read before the count was checked")

    def __getitem__(self, i):
        raise AssertionError("the points were read before the count was checked")


class FakePrompt:
    def __init__(self, n_points: int) -> None:
        self.points = Untouchable(n_points)


def test_too_many_points_is_refused_before_any_point_is_read():
    with pytest.raises(InvalidInput, match=r"prompts\[1\].points: 2000000 points; at most 64 per prompt"):
        prompts_from_pb([FakePrompt(3), FakePrompt(2_000_000)], 64, 64)


def test_too_many_prompts_is_refused_before_any_prompt_is_read():
    with pytest.raises(InvalidInput, match="prompts: 100000 prompts; at most 64 per request"):
        prompts_from_pb(Untouchable(100_000), 64, 64)


def test_prompts_within_the_limits_convert():
    p = pb.Prompt(points=[pb.Point(x=1, y=2, label=1), pb.Point(x=3, y=4, label=0)], box=pb.Box(x0=0, y0=0, x1=5, y1=6))
    (prompt,) = prompts_from_pb([p], 64, 2)
    assert prompt.points.tolist() == [[1, 2], [3, 4]] and prompt.labels.tolist() == [1, 0]
    assert prompt.box.tolist() == [0, 0, 5, 6] and prompt.mask_input is None
