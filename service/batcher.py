"""Micro-batching: paragraphs from concurrent requests are scored together.

Requests put their paragraphs on one bounded queue; a single worker waits a
short window for more to arrive, takes paragraphs up to a token budget and
scores them in one model call on a dedicated thread (the event loop stays
free). When the queue is full, callers get `QueueFull` (the API answers 503
with Retry-After) instead of memory growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lichang.models.scorer import ParagraphInput, ParagraphScore, Scorer

CHARS_PER_TOKEN = 1.4  # Chinese news text with this tokenizer (see shared/notes/base-encoder.md)


class QueueFull(RuntimeError):
    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"scoring queue is full ({queued} paragraphs waiting, limit {limit}); retry later")
        self.queued, self.limit = queued, limit


@dataclass
class _Item:
    paragraph: ParagraphInput
    future: asyncio.Future


def estimated_tokens(paragraph: ParagraphInput) -> int:
    return int(len(paragraph.text) / CHARS_PER_TOKEN) + 24  # + the target segment and special tokens


class MicroBatcher:
    def __init__(self, scorer: Scorer, max_batch_tokens: int, wait_ms: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.scorer = scorer
        self.max_batch_tokens = max_batch_tokens
        self.wait_seconds = wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lichang-scorer")

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="lichang-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("service is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False)

    async def score(self, paragraphs: Sequence[ParagraphInput]) -> list[ParagraphScore]:
        if self._wakeup is None:
            raise RuntimeError("the batcher is not started")
        if len(self._queue) + len(paragraphs) > self.max_queue:
            raise QueueFull(len(self._queue), self.max_queue)
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in paragraphs]
        self._queue.extend(items)
        self._wakeup.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        tokens = 0
        while self._queue:
            cost = estimated_tokens(self._queue[0].paragraph)
            if batch and tokens + cost > self.max_batch_tokens:
                break
            item = self._queue.popleft()
            if item.future.cancelled():  # the client went away
                continue
            batch.append(item)
            tokens += cost
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if self.wait_seconds:
                await asyncio.sleep(self.wait_seconds)  # let concurrent requests join this batch
            batch = self._take_batch()
            if not self._queue:
                self._wakeup.clear()
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                scores = await loop.run_in_executor(
                    self._executor, self.scorer.score, [item.paragraph for item in batch])
            except Exception as exc:  # a model failure fails this batch's requests, not the worker
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, score in zip(batch, scores, strict=True):
                if not item.future.done():
                    item.future.set_result(score)
