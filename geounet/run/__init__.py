"""One scene's run: plan it (:mod:`~geounet.run.planning`), keep its prediction store
(:mod:`~geounet.run.store`) and orchestrate predict / segment (:mod:`~geounet.run.pipeline`).

The stage between the engine (how a chunk is computed) and the outputs; ``geounet.predict`` and
``geounet.segment`` are the public entry points (see ``geounet/__init__.py``)."""
