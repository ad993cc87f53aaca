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
from dataclasses import dataclass
from typing import Any

from geounet.distributed.threads import configure_threads

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class InProcess:
    """Tasks running in this process (the model is loaded once per process): on Dask's
    threaded scheduler with ``threads`` threads (None: Dask's ``num_workers`` config, else
    one), or one after the other in this thread (``synchronous``). What
    :func:`geounet.distributed.cluster.scheduler` yields for
    :class:`~geounet.distributed.schedulers.Default` (one scene),
    :class:`~geounet.distributed.schedulers.Threads` and
    :class:`~geounet.distributed.schedulers.Synchronous`."""

    threads: int | None = None
    synchronous: bool = False

    @property
    def slots(self) -> int:
        """How many tasks run at once."""
        if self.synchronous:
            return 1
        import dask

        return max(1, int(self.threads or dask.config.get("num_workers", None) or 1))


@contextlib.contextmanager
def in_this_process(threads: int) -> Iterator[InProcess]:
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
            yield InProcess(synchronous=True)
            return
        import dask

        with dask.config.set(num_workers=threads):
            yield InProcess(threads)
    finally:
        torch.set_num_threads(before)


def run_in_process(fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[str],
                   on: InProcess, record: Callable[[Any], None]) -> None:
    """Run ``fn(arg)`` as one task per ``(arg, key)`` on ``on`` in this process
    (``on.slots`` threads); ``record`` gets each result as its task finishes
    (:func:`geounet.distributed.cluster.run_tasks`)."""
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
    kwargs: dict[str, Any] = {"scheduler": dask.local.get_sync}
    if not on.synchronous:  # threads given, else what in_this_process set, else one
        kwargs = {"scheduler": dask.threaded.get, "num_workers": on.slots}
    with _Done():
        dask.compute(*tasks, **kwargs)
