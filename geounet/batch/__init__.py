"""Many scenes on one Dask cluster: the job (:mod:`~geounet.batch.job`, ``run_batch``), its
inputs and manifests (:mod:`~geounet.batch.inputs`), the result table and done records
(:mod:`~geounet.batch.table`) and the per-scene finish task (:mod:`~geounet.batch.finish`)."""
