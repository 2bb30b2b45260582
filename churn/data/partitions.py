"""Running one task per block on the cluster, and naming the block when it keeps killing workers.

A block that kills every worker it runs on (a line that exhausts memory, a crash in a native
library) fails after ``distributed.scheduler.allowed-failures`` retries with distributed's
``KilledWorker``, which names only a task key. The key here carries the block's index, so the
error can name the stage, the file, its byte range and its first line.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker

from churn.data.blocks import Block
from churn.data.manifest import IngestError


class PartitionKilledError(IngestError):
    """One block killed every worker that ran it."""


def describe(block: Block) -> str:
    return (f"block {block.index} of {block.path} (bytes {block.offset:,}..{block.offset + block.length:,}, "
            f"from line {max(block.first_line, 2):,})")


def map_blocks(client: Client, stage: str, fn: Callable[..., Any], blocks: Sequence[Block], *args: Any,
               **kwargs: Any) -> list[Any]:
    """``fn(block, *args, **kwargs)`` for every block on the cluster, results in block order.

    At most one block per worker thread is handed out at a time (a block reads its own bytes, so
    queueing more on a worker gains nothing), counted again as each block ends, so workers that
    join later get blocks too. So when a one-thread worker dies, the block it was running is the
    only one it held, and a block that keeps killing workers is the one named, not a block that
    waited beside it (on a worker with several threads, its neighbours die with it as often).
    """
    token = uuid.uuid4().hex[:8]
    keys = [f"{stage}-block-{b.index:05d}-{token}" for b in blocks]

    def threads() -> int:
        return max(1, sum(client.nthreads().values()))

    results: list[Any] = [None] * len(blocks)
    if not blocks:
        return results
    position = {k: i for i, k in enumerate(keys)}

    def submit(i: int) -> Future:
        return client.submit(fn, blocks[i], *args, key=keys[i], pure=False, **kwargs)

    in_flight = min(threads(), len(blocks))
    todo = iter(range(in_flight, len(blocks)))
    running = as_completed([submit(i) for i in range(in_flight)], loop=client.loop)
    try:
        for future in running:
            in_flight -= 1
            if future.status == "finished":  # hand out the next block before fetching this one's result
                limit = threads()
                while in_flight < limit and (i := next(todo, None)) is not None:
                    running.add(submit(i))
                    in_flight += 1
            results[position[future.key]] = future.result()  # raises the error of a failed block
            future.release()
    except KilledWorker as exc:
        where = describe(blocks[keys.index(exc.task)]) if exc.task in keys else f"task {exc.task}"
        raise PartitionKilledError(
            f"{stage}: {where} killed every worker that ran it ({exc.allowed_failures + 1} attempts, "
            "distributed.scheduler.allowed-failures); the worker logs say why. Nothing was published") from None
    finally:
        running.clear()
    return results
