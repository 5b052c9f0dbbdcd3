"""Read back what an offline wandb run logged, from its ``run-<id>.wandb`` file.

Exists because this wandb version has no public reader for offline runs: ``wandb.Api()`` only sees synced runs,
``wandb.sdk.internal.datastore`` is gone and ``wandb sync --view`` only prints. The file is a 7-byte header
(``:W&B``, 2 magic bytes, 1 version byte) followed by the LevelDB log format: 32 KiB blocks of chunks, each with a
7-byte header (CRC32C uint32, length uint16, type uint8: 1 full, 2 first, 3 middle, 4 last); a block tail shorter
than a chunk header is padding. Each assembled record is a ``wandb_internal_pb2.Record``.

The wandb service writes the file through a block buffer and closes it some time after ``run.finish()`` returns
(finish only informs the service), so a reader in the same process must call ``wandb.teardown()`` first; an
unfinished file is refused rather than read half-way.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def records(path: str | Path) -> list[Any]:
    """Every ``Record`` in the file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HEADER:  # padding at the end of a block
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad chunk checksum at byte {pos}"
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"config": {...}, "history": [{key: value}, ...], "summary": {...}, "run": Record.run, "exit": Record.exit}`` of an offline run."""
    files = list(Path(run_dir).glob("run-*.wandb"))
    assert len(files) == 1, f"expected one run-*.wandb in {run_dir}, found {files}"
    result: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run": None, "exit": None}
    for rec in records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            result["run"] = rec.run
            for item in rec.run.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                result["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            result["history"].append(
                {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in rec.history.item}
            )
        elif kind == "exit":
            result["exit"] = rec.exit
        elif kind == "summary":
            for item in rec.summary.update:
                result["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert result["exit"], (f"{files[0]} has no exit record: the wandb service has not closed it yet (call "
                            "wandb.teardown() before reading a run finished in this process)")
    return result
