"""Synthetic georeferenced scenes with ground truth: imagery, vector truth and a class mask.

The scene is planned as vector geometry first (roads, buildings, shadows, paved lots: cheap
for any size), then rendered window by window: each window rasterizes the geometry that
touches it, evaluates texture fields that are defined globally (smooth noise interpolated
from a lattice whose values depend only on the seed and the lattice position), blurs with a
halo and adds sensor noise seeded per 256-pixel block. The pixels therefore do not depend on
the window size, and no seams appear at window borders.

Examples
--------
>>> from geounet.synth import synthesize_scene
>>> result = synthesize_scene("out", size=1024, seed=0)  # doctest: +SKIP
>>> result.scene_path.name, result.summary.n_buildings  # doctest: +SKIP
('scene.tif', 211)
"""

from __future__ import annotations

from geounet.synth.config import (
    CLASS_NAMES,
    DEFAULT_CRS,
    DEFAULT_ORIGIN,
    MASK_NAME,
    MASK_NODATA,
    NOISE_BLOCK,
    OUTPUT_NAMES,
    SCENE_NAME,
    SCENE_NODATA,
    SUMMARY_NAME,
    TRUTH_NAME,
    ScenePlan,
    SynthConfig,
    SynthResult,
    SynthSummary,
)
from geounet.synth.plan import plan_scene
from geounet.synth.render import render_window
from geounet.synth.write import synthesize_scene, write_synthetic_scene

__all__ = [
    "CLASS_NAMES", "DEFAULT_CRS", "DEFAULT_ORIGIN", "MASK_NAME", "MASK_NODATA", "NOISE_BLOCK",
    "OUTPUT_NAMES", "SCENE_NAME", "SCENE_NODATA", "SUMMARY_NAME", "TRUTH_NAME", "ScenePlan",
    "SynthConfig", "SynthResult", "SynthSummary", "plan_scene", "render_window",
    "synthesize_scene", "write_synthetic_scene",
]
