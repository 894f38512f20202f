"""Indexes on disk: the store (locks, swaps, checksums), the folder layout and format, segments, the item table."""
from .layout import FORMAT_VERSION, IndexFolder, migrate, read_manifest, read_raw_manifest, write_json_atomic
from .metadata import Metadata
from .store import (Store, collect_garbage, index_home, manifest_checksum, seal_index, seal_update,
                    verify_index)

__all__ = ["FORMAT_VERSION", "IndexFolder", "Metadata", "Store", "collect_garbage", "index_home",
           "manifest_checksum", "migrate", "read_manifest", "read_raw_manifest", "seal_index", "seal_update",
           "verify_index", "write_json_atomic"]
