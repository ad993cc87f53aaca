"""The batch's result table: one row per scene, as CSV, JSON and text; the done records.

A scene finished by a run leaves a done record (``_geounet_batch/NAME.json``: its run
settings and row) under the output folder, written last; a resumed batch skips the scene when
its settings and outputs are unchanged (:func:`skip_finished`). Re-exported by
:mod:`geounet.batch.job`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from geounet import objectstore
from geounet.errors import InputError

log = logging.getLogger(__name__)

SceneStatus = Literal["done", "skipped", "failed"]
"""``done``: computed in this run; ``skipped``: finished by an earlier run (``resume``);
``failed``: see the error column."""

DONE_DIR = "_geounet_batch"
"""Folder (or prefix) under the output directory holding one done record per finished scene."""
TABLE_NAMES = ("batch.csv", "batch.json")


@dataclass(frozen=True)
class SceneResult:
    """One row of the batch table.

    Attributes
    ----------
    scene : path or URL as resolved.
    name : output name (file name without suffix).
    status : ``done``, ``skipped`` (finished by an earlier run) or ``failed``.
    megapixels : scene size (0 if it could not be opened).
    seconds : wall time from planning to the last output (scenes overlap in time).
    objects : layer -> features written.
    error : why the scene failed (the library's message), else None.
    chunks, chunks_computed, chunks_resumed : chunks in the scene, computed in this run,
        and taken from an interrupted run's store.
    outputs : every output written for the scene.
    """

    scene: str
    name: str
    status: SceneStatus
    megapixels: float = 0.0
    seconds: float = 0.0
    objects: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    chunks: int = 0
    chunks_computed: int = 0
    chunks_resumed: int = 0
    outputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return {
            "scene": self.scene, "name": self.name, "status": self.status,
            "megapixels": round(self.megapixels, 6), "seconds": round(self.seconds, 3),
            "objects": dict(self.objects), "error": self.error, "chunks": self.chunks,
            "chunks_computed": self.chunks_computed, "chunks_resumed": self.chunks_resumed,
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            scene=data["scene"], name=data["name"], status=data["status"],
            megapixels=float(data.get("megapixels", 0.0)), seconds=float(data.get("seconds", 0)),
            objects={k: int(v) for k, v in dict(data.get("objects") or {}).items()},
            error=data.get("error"), chunks=int(data.get("chunks", 0)),
            chunks_computed=int(data.get("chunks_computed", 0)),
            chunks_resumed=int(data.get("chunks_resumed", 0)),
            outputs=tuple(data.get("outputs") or ()),
        )


@dataclass(frozen=True)
class BatchResult:
    """What :func:`run_batch` did: one :class:`SceneResult` per scene, in input order.

    Attributes
    ----------
    scenes : the rows.
    out_dir : the output folder or prefix.
    seconds : wall time of the whole job.
    tables : the written ``batch.csv`` and ``batch.json``.
    """

    scenes: tuple[SceneResult, ...]
    out_dir: str
    seconds: float
    tables: tuple[str, ...] = ()

    @property
    def failed(self) -> list[SceneResult]:
        """Rows of scenes that failed."""
        return [row for row in self.scenes if row.status == "failed"]

    @property
    def ok(self) -> bool:
        """True if no scene failed."""
        return not self.failed

    @property
    def layers(self) -> list[str]:
        """Every layer name in the object counts, in first-seen order."""
        return list(dict.fromkeys(k for row in self.scenes for k in row.objects))

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows: scene, status, megapixels, seconds, ``objects_<layer>`` ..., error."""
        layers = self.layers
        out = []
        for row in self.scenes:
            flat: dict[str, Any] = {"scene": row.scene, "status": row.status,
                                    "megapixels": round(row.megapixels, 3),
                                    "seconds": round(row.seconds, 2)}
            for layer in layers:
                flat[f"objects_{layer}"] = row.objects.get(layer, "")
            flat.update({"chunks": row.chunks, "chunks_computed": row.chunks_computed,
                         "chunks_resumed": row.chunks_resumed, "error": row.error or ""})
            out.append(flat)
        return out

    def to_csv(self) -> str:
        """The table as CSV text."""
        rows = self.rows()
        handle = io.StringIO()
        fields = list(rows[0]) if rows else ["scene", "status", "megapixels", "seconds", "error"]
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return handle.getvalue()

    def to_json(self) -> str:
        """The table as JSON text (rows with nested object counts and outputs)."""
        return json.dumps({"out_dir": self.out_dir, "seconds": round(self.seconds, 3),
                           "scenes": [row.to_dict() for row in self.scenes]}, indent=1)

    def format_table(self, max_error: int = 90) -> str:
        """A plain-text table for the terminal (long paths and errors shortened)."""
        layers = self.layers
        head = ["scene", "status", "MP", "seconds", *layers, "error"]
        body = []
        for row in self.scenes:
            error = row.error or ""
            if len(error) > max_error:
                error = error[: max_error - 3] + "..."
            body.append([row.name, row.status, f"{row.megapixels:.2f}", f"{row.seconds:.1f}",
                         *(str(row.objects.get(layer, "")) for layer in layers), error])
        widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
                 for r in [head, *body]]
        done = sum(r.status == "done" for r in self.scenes)
        skipped = sum(r.status == "skipped" for r in self.scenes)
        lines.append(f"{len(self.scenes)} scene(s): {done} done, {skipped} skipped, "
                     f"{len(self.failed)} failed in {self.seconds:.1f} s")
        return "\n".join(lines)


def done_record_url(out_dir: str, name: str) -> str:
    """Where a scene's done record lives under the output folder."""
    return objectstore.join(out_dir, DONE_DIR, f"{name}.json")


def skip_finished(record_url: str, scene: str, name: str,
                   run: dict[str, Any]) -> SceneResult | None:
    """The row of a scene an earlier run finished with the same settings, or None to redo it.

    Raises
    ------
    InputError
        The scene was finished with other settings (scene file, model, sizes changed).
    """
    text = objectstore.read_text(record_url)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    if not record:
        return None
    stored = record.get("run") or {}
    from geounet.output import changed_settings

    changed = changed_settings(stored, run)
    if changed:
        raise InputError(
            f"scene {scene!r} was finished by an earlier batch with other settings "
            f"({', '.join(f'{k}: {stored.get(k)!r} -> {run.get(k)!r}' for k in changed)}); "
            "rerun with --overwrite to recompute it, or with the same settings."
        )
    previous = SceneResult.from_dict(record["result"])
    if not all(objectstore.exists(url) for url in previous.outputs):
        log.info("outputs of %s are missing; computing it again", name)
        return None
    return SceneResult(scene, name, "skipped", previous.megapixels, 0.0, previous.objects,
                       None, previous.chunks, 0, previous.chunks, previous.outputs)


def write_result_tables(result: BatchResult) -> BatchResult:
    """Write ``batch.csv`` and ``batch.json`` into the output folder; the result naming them."""
    paths = []
    for name, text in zip(TABLE_NAMES, (result.to_csv(), result.to_json())):
        url = objectstore.join(result.out_dir, name)
        objectstore.write_text(url, text)
        paths.append(url)
    return BatchResult(result.scenes, result.out_dir, result.seconds, tuple(paths))
