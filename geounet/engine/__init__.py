"""How a chunk is computed: the global tile grid (:mod:`~geounet.engine.tiling`), blend windows
(:mod:`~geounet.engine.blend`), runtime backends (:mod:`~geounet.engine.backends`), the
per-process model runner (:mod:`~geounet.engine.runner`) and chunk inference
(:mod:`~geounet.engine.inference`).

The engine knows nothing of runs, stores' life cycles, clusters or the CLI (an import contract
in ``pyproject.toml``)."""
