"""Where tasks run: the one place a Dask client or cluster is made and tasks are run with
retries (:mod:`~geounet.distributed.cluster`), runs in this process on Dask's threaded
scheduler (:mod:`~geounet.distributed.local`), the torch-thread rules
(:mod:`~geounet.distributed.threads`), the version check at connect
(:mod:`~geounet.distributed.versions`) and the worker's registry of shipped models
(:mod:`~geounet.distributed.worker`)."""
