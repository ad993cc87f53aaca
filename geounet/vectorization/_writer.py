"""Stream vector features to GeoPackage, GeoParquet or FlatGeobuf without one big table.

Features arrive in batches per layer and are spooled to Arrow IPC files next to the output;
when every chunk is done each layer is streamed, batch by batch, into the final format under
a temporary name that is renamed into place. Memory is one batch, never the whole layer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from geounet.config import VectorFormat, choices

SUFFIXES: dict[str, VectorFormat] = {
    f".{fmt}": fmt for fmt in choices(VectorFormat)  # type: ignore[misc]
}
"""Output suffix -> format (the suffix is the format's name)."""
DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}


def layer_file_names(name: str, fmt: VectorFormat, layers: Sequence[str]) -> dict[str, str]:
    """File name of each layer of the vector output named ``name``: the one GeoPackage for
    every layer, or ``<stem>_<layer><suffix>`` per layer (GeoParquet, FlatGeobuf). The one
    naming rule of vector outputs (``vectorize`` and ``geounet batch``).

    >>> layer_file_names("objects.fgb", "fgb", ["buildings", "roads"])
    {'buildings': 'objects_buildings.fgb', 'roads': 'objects_roads.fgb'}
    >>> layer_file_names("objects.gpkg", "gpkg", ["buildings", "roads"])
    {'buildings': 'objects.gpkg', 'roads': 'objects.gpkg'}
    """
    if fmt == "gpkg":
        return {layer: name for layer in layers}
    path = PurePosixPath(name)
    return {layer: f"{path.stem}_{layer}{path.suffix}" for layer in layers}


def layer_paths(out: Path, fmt: VectorFormat, layers: list[str]) -> dict[str, Path]:
    """Final path of each layer of ``out`` (:func:`layer_file_names`)."""
    return {layer: out.with_name(file) for layer, file in
            layer_file_names(out.name, fmt, layers).items()}


class LayerSpec:
    """Name, geometry type and attribute columns (name -> arrow type) of one output layer."""

    def __init__(self, name: str, geometry_type: str, columns: dict[str, Any]) -> None:
        import pyarrow as pa

        self.name = name
        self.geometry_type = geometry_type
        fields = [pa.field(key, value) for key, value in columns.items()]
        fields.append(pa.field("geometry", pa.binary()))
        self.schema = pa.schema(fields)


class FeatureWriter:
    """Collect feature batches per layer, then write the final files atomically.

    Use as a context manager; :meth:`commit` writes and renames, leaving the context without
    commit removes every temporary file.
    """

    def __init__(self, out: Path, fmt: VectorFormat, specs: list[LayerSpec], crs_wkt: str) -> None:
        import pyarrow as pa

        self.out = out
        self.fmt = fmt
        self.specs = {spec.name: spec for spec in specs}
        self.crs_wkt = crs_wkt
        self.counts = {spec.name: 0 for spec in specs}
        self.paths = layer_paths(out, fmt, list(self.specs))
        self._spool = Path(tempfile.mkdtemp(prefix=f".{out.stem}.spool-", dir=out.parent))
        self._writers = {
            name: pa.ipc.new_file(str(self._spool / f"{i}.arrow"), spec.schema)
            for i, (name, spec) in enumerate(self.specs.items())
        }
        self._temps: list[Path] = []

    def write(self, layer: str, geometries: Any, attributes: dict[str, Any]) -> None:
        """Append features: shapely geometries (map coordinates) and equal-length columns."""
        import pyarrow as pa
        import shapely

        if len(geometries) == 0:
            return
        spec = self.specs[layer]
        arrays = [pa.array(np.asarray(attributes[f.name]), type=f.type) for f in spec.schema
                  if f.name != "geometry"]
        arrays.append(pa.array(shapely.to_wkb(np.asarray(geometries, dtype=object)), pa.binary()))
        self._writers[layer].write_batch(pa.record_batch(arrays, schema=spec.schema))
        self.counts[layer] += len(geometries)

    def _reader(self, layer: str) -> Any:
        import pyarrow as pa

        index = list(self.specs).index(layer)
        source = pa.ipc.open_file(str(self._spool / f"{index}.arrow"))
        schema = source.schema
        batches = (source.get_batch(i) for i in range(source.num_record_batches))
        return pa.RecordBatchReader.from_batches(schema, batches)

    def commit(self) -> dict[str, Path]:
        """Write every layer to its final format and rename it into place."""
        for writer in self._writers.values():
            writer.close()
        if self.fmt == "gpkg":
            temp = self._temp_for(self.out)
            for i, layer in enumerate(self.specs):
                self._write_ogr(layer, temp, append=i > 0)
            os.replace(temp, self.out)
        else:
            temps = {}
            for layer, path in self.paths.items():
                temp = self._temp_for(path)
                if self.fmt == "fgb":
                    self._write_ogr(layer, temp, append=False)
                else:
                    self._write_parquet(layer, temp)
                temps[layer] = temp
            for layer, temp in temps.items():
                os.replace(temp, self.paths[layer])
        return dict(self.paths)

    def _temp_for(self, path: Path) -> Path:
        temp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
        self._temps.append(temp)
        return temp

    def _write_ogr(self, layer: str, path: Path, *, append: bool) -> None:
        from pyogrio.raw import write_arrow

        spec = self.specs[layer]
        write_arrow(
            self._reader(layer),
            str(path),
            layer=layer,
            driver=DRIVERS[self.fmt],
            geometry_name="geometry",
            geometry_type=spec.geometry_type,
            crs=self.crs_wkt,
            append=append,
        )

    def _write_parquet(self, layer: str, path: Path) -> None:
        import pyarrow.parquet as pq
        from pyproj import CRS

        spec = self.specs[layer]
        geo = {
            "version": "1.0.0",
            "primary_column": "geometry",
            "columns": {
                "geometry": {
                    "encoding": "WKB",
                    "geometry_types": [spec.geometry_type],
                    "crs": CRS.from_wkt(self.crs_wkt).to_json_dict(),
                }
            },
        }
        schema = spec.schema.with_metadata({b"geo": json.dumps(geo).encode()})
        with pq.ParquetWriter(str(path), schema) as writer:
            for batch in self._reader(layer):
                writer.write_batch(batch.replace_schema_metadata(schema.metadata))

    def close(self) -> None:
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # already closed by commit
                pass
        shutil.rmtree(self._spool, ignore_errors=True)
        for temp in self._temps:
            if temp.exists():
                temp.unlink()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
