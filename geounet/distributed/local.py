"""Running tasks in this process: Dask's threaded or synchronous scheduler.

What :func:`geounet.distributed.cluster.scheduler` gives a ``predict`` / ``segment`` run
without ``--workers``, and how :func:`geounet.distributed.cluster.run_tasks` runs the chunk
tasks there: as ``dask.delayed`` calls that never traverse their arguments, each result
recorded as its task finishes. Nothing here imports ``distributed``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from geounet.distributed.threads import configure_threads

log = logging.getLogger(__name__)

LocalScheduler = Literal["threads", "synchronous"]
"""In-process Dask schedulers (the model is loaded once per process)."""


@contextlib.contextmanager
def in_this_process(threads: int) -> Iterator[LocalScheduler]:
    """Dask's threaded scheduler in this process with ``threads`` threads (``"synchronous"``
    for one), each with ``cores // threads`` torch threads; torch's thread count and Dask's
    config are what they were once the block ends."""
    import torch

    before = torch.get_num_threads()
    try:
        torch_threads = configure_threads(threads_per_worker=threads, workers=1)
        log.info("running in this process: %d Dask thread(s) x %d torch thread(s) "
                 "(--workers N for a local cluster of worker processes)", threads, torch_threads)
        if threads == 1:
            yield "synchronous"
            return
        import dask

        with dask.config.set(num_workers=threads):
            yield "threads"
    finally:
        torch.set_num_threads(before)


def run_in_process(fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[str],
                   on: LocalScheduler, workers: int | None,
                   record: Callable[[Any], None]) -> None:
    """Run ``fn(arg)`` as one task per ``(arg, key)`` on ``on`` in this process (``workers``
    threads, default what :func:`in_this_process` set); ``record`` gets each result as its
    task finishes (:func:`geounet.distributed.cluster.run_tasks`)."""
    import dask
    import dask.local
    import dask.threaded
    from dask.callbacks import Callback

    wanted = set(keys)

    class _Done(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            if key in wanted:
                record(result)

    call = dask.delayed(fn, pure=False)
    tasks = [call(dask.delayed(arg, name=f"{key}-arg", traverse=False), dask_key_name=key)
             for arg, key in zip(args, keys)]
    # the scheduler function itself, not its name: a name makes dask import distributed
    # (0.3 s) to look for a default client
    get = dask.threaded.get if on == "threads" else dask.local.get_sync
    kwargs: dict[str, Any] = {"scheduler": get}
    if on == "threads":  # workers given, else what scheduler() set, else one thread
        kwargs["num_workers"] = workers or dask.config.get("num_workers", None) or 1
    with _Done():
        dask.compute(*tasks, **kwargs)
