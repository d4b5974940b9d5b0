"""gateway/embedding_store.py: single-flight shares only the image's work, and its cross-replica
lock holds while the encoder runs. A real redis-server; Triton is a stand-in whose encoder is
slow on purpose (a unit test of the store, not of Triton)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from samserve.contract import ModelInfo
from samserve.core.errors import BackendUnavailable, DeadlineExceeded, InvalidInput
from samserve.devtools.sample_images import png_image
from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.deadline import Deadline
from samserve.gateway.embedding_store import EmbeddingStore
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings

MODEL = ModelInfo("test-model", "small", 64, np.zeros(3, np.float32), np.ones(3, np.float32), 0.0)


class SlowEncoder:
    """Triton's encode, taking `seconds` (or failing as Triton does when the call's deadline
    comes first); counts its runs."""

    def __init__(self, seconds: float, fail: Exception | None = None) -> None:
        self.seconds, self.fail, self.runs = seconds, fail, 0
        self.model_id = MODEL.model_id

    async def encode(self, model, images, deadline_s=None):
        self.runs += 1
        if deadline_s is not None and deadline_s < self.seconds:
            await asyncio.sleep(deadline_s)
            raise DeadlineExceeded("deadline exceeded while Triton ran sam_encoder")
        await asyncio.sleep(self.seconds)
        if self.fail is not None:
            raise self.fail
        return np.zeros((1, 256, 4, 4), np.float16), self.model_id


DECODES = []


async def on_cpu(fn, *args):
    await asyncio.sleep(0.05)  # decoding takes a while: concurrent requests arrive meanwhile
    if fn.__name__ == "decode_image":
        DECODES.append(1)
    return fn(*args)


def store(redis_url: str | None, encoder: SlowEncoder, **settings) -> EmbeddingStore:
    s = Settings(embedded=False, redis_url=redis_url, **settings)
    cache = RedisCache(redis_url, 1.0, 0.2) if redis_url else None
    return EmbeddingStore(s, encoder, cache, Metrics(), on_cpu)  # type: ignore[arg-type]


def prompt_check(x_max: float):
    def validate(size: tuple[int, int]) -> None:
        if x_max > size[1]:
            raise InvalidInput(f"prompts[0].points[0].x = {x_max:g} is outside the image")

    return validate


def test_a_bad_prompt_fails_only_its_own_request():
    encoder = SlowEncoder(0.2)
    s = store(None, encoder)
    data = png_image(150, 200, 1)

    async def run():
        return await asyncio.gather(
            s.embedding(data, MODEL, Deadline(10), prompt_check(5000)),  # first, so it would lead
            s.embedding(data, MODEL, Deadline(10), prompt_check(10)),
            s.embedding(data, MODEL, Deadline(10)),
            return_exceptions=True,
        )

    bad, good, embed = asyncio.run(run())
    assert isinstance(bad, InvalidInput) and "5000" in str(bad)
    assert not isinstance(good, Exception) and not isinstance(embed, Exception), (good, embed)
    assert good[1].original_size == (150, 200) and "5000" not in repr(good)
    assert encoder.runs == 1


def test_no_encoder_run_when_every_request_has_a_bad_prompt():
    encoder = SlowEncoder(0.05)
    s = store(None, encoder)

    async def run():
        data = png_image(80, 90, 2)
        return await asyncio.gather(
            *(s.embedding(data, MODEL, Deadline(10), prompt_check(1000)) for _ in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, InvalidInput) for r in asyncio.run(run()))
    assert encoder.runs == 0


def test_a_cancelled_leader_neither_cancels_nor_poisons_its_followers():
    encoder = SlowEncoder(0.6)
    s = store(None, encoder)
    data = png_image(100, 120, 3)

    async def run():
        leader = asyncio.create_task(s.embedding(data, MODEL, Deadline(10)))
        await asyncio.sleep(0.01)
        followers = [asyncio.create_task(s.embedding(data, MODEL, Deadline(10))) for _ in range(2)]
        while encoder.runs == 0:
            await asyncio.sleep(0.01)
        leader.cancel()  # its client went away mid-encode
        return await asyncio.gather(*followers, return_exceptions=True)

    results = asyncio.run(run())
    assert all(not isinstance(r, BaseException) for r in results), results
    assert encoder.runs == 1


def test_a_backend_failure_is_shared_and_the_next_request_runs_again():
    encoder = SlowEncoder(0.05, fail=BackendUnavailable("Triton is unavailable"))
    s = store(None, encoder)
    data = png_image(60, 70, 4)

    async def run():
        return await asyncio.gather(*(s.embedding(data, MODEL, Deadline(10)) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(r, BackendUnavailable) for r in asyncio.run(run()))
    assert encoder.runs == 1
    encoder.fail = None
    asyncio.run(s.embedding(data, MODEL, Deadline(10)))  # a failed run is not joined again
    assert encoder.runs == 2


@pytest.mark.parametrize("lock_ttl_s", [0.3])
def test_the_cross_replica_lock_outlives_its_ttl_while_the_encoder_runs(redis_server, lock_ttl_s):
    """Two replicas, one Redis, an encoder run four lock TTLs long: the holder renews the lock,
    so the other replica waits for its entry instead of encoding the same image again."""
    encoder = SlowEncoder(4 * lock_ttl_s)
    a = store(redis_server.url, encoder, lock_ttl_s=lock_ttl_s)
    b = store(redis_server.url, encoder, lock_ttl_s=lock_ttl_s)
    data = png_image(90, 110, 5)

    async def run():
        first = asyncio.create_task(a.embedding(data, MODEL, Deadline(30)))
        await asyncio.sleep(0.15)
        second = asyncio.create_task(b.embedding(data, MODEL, Deadline(30)))
        return await asyncio.gather(first, second)

    (_, _, a_cached), (_, _, b_cached) = asyncio.run(run())
    assert encoder.runs == 1
    assert not a_cached and b_cached


def test_an_entry_written_between_a_replicas_read_and_its_lock_check_is_found(redis_server):
    """by_id on replica b misses, and before b looks at the lock, replica a writes the entry and
    lets its lock go (a answers first and writes after, issue 35). A free lock after a miss is
    not proof of absence: b reads once more instead of answering NOT_FOUND."""
    a, b = store(redis_server.url, SlowEncoder(0.01)), store(redis_server.url, SlowEncoder(0.01))
    assert b.cache is not None
    real_read = b.cache.read
    reads = []

    async def read_then_let_the_writer_finish(key, what):
        value = await real_read(key, what)
        reads.append(value is not None)
        while a._writes:  # the writer's set and release land here, after the miss
            await asyncio.sleep(0.01)
        return value

    b.cache.read = read_then_let_the_writer_finish  # type: ignore[method-assign]

    async def run():
        image_id, _, _ = await a.embedding(png_image(80, 70, 11), MODEL, Deadline(30))
        return await b.by_id(image_id, MODEL, Deadline(30))

    assert asyncio.run(run()).original_size == (80, 70)
    assert reads == [False, True]  # missed while being written, found once the lock was free


def test_a_short_deadline_fails_only_its_own_request():
    """The run's starter has 0.2 s, its encoder run takes 0.5 s: the starter gets its deadline;
    the request that joined it, with time of its own, starts another run and is served."""
    encoder = SlowEncoder(0.5)
    s = store(None, encoder)
    data = png_image(70, 80, 6)

    async def run():
        short = asyncio.create_task(s.embedding(data, MODEL, Deadline(0.25)))
        await asyncio.sleep(0.01)
        long = asyncio.create_task(s.embedding(data, MODEL, Deadline(10)))
        return await asyncio.gather(short, long, return_exceptions=True)

    short, long = asyncio.run(run())
    assert isinstance(short, DeadlineExceeded)
    assert not isinstance(long, BaseException), long
    assert encoder.runs == 2 and not s._flights


def test_a_request_whose_own_encoder_run_times_out_is_not_run_again():
    """Triton's own timeout (no client deadline) ends the request: no run after run."""
    encoder = SlowEncoder(0.2, fail=DeadlineExceeded("deadline exceeded while Triton ran sam_encoder"))
    s = store(None, encoder)

    async def run():
        return await asyncio.gather(s.embedding(png_image(50, 60, 7), MODEL, Deadline(None)), return_exceptions=True)

    (result,) = asyncio.run(run())
    assert isinstance(result, DeadlineExceeded) and encoder.runs == 1


def test_flights_end_when_their_requests_leave():
    """Requests that time out or are cancelled leave no flight (nor its decoded image) behind,
    and a decode nobody waits for any more is cancelled, not queued up."""
    encoder = SlowEncoder(0.3)
    s = store(None, encoder)
    data = png_image(90, 90, 8)

    async def run():
        DECODES.clear()
        for _ in range(5):  # cancelled while the image is hashed or decoded
            task = asyncio.create_task(s.embedding(data, MODEL, Deadline(10)))
            await asyncio.sleep(0.07)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        timed_out = await asyncio.gather(s.embedding(data, MODEL, Deadline(0.2)), return_exceptions=True)
        await asyncio.sleep(0.5)  # the encoder run it started ends, with nobody waiting
        return timed_out

    (timed_out,) = asyncio.run(run())
    assert isinstance(timed_out, DeadlineExceeded)
    assert not s._flights
    assert len(DECODES) <= 6
