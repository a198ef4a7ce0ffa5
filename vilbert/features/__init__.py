"""Region features: the LMDB feature store, its reader, padding, converters and the extractor.

    from vilbert.features import FeatureReader, FeatureWriter, pad_regions

Command line: `python -m vilbert.features {extract,convert,info} ...` (see `--help`).
"""

from vilbert.features.padding import PaddedRegions, pad_regions
from vilbert.features.reader import FeatureReader, MissingImageError, RegionItem, box_locations, store_info
from vilbert.features.store import FeatureStoreError, FeatureWriter

__all__ = [
    "FeatureReader",
    "FeatureWriter",
    "FeatureStoreError",
    "MissingImageError",
    "PaddedRegions",
    "RegionItem",
    "box_locations",
    "pad_regions",
    "store_info",
]
