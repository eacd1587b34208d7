"""Which products form the frozen test split: a stable share by a salted hash of the id.

Used by the catalogue import (``annotation.catalogue.reader.split_for``) and the engine CLI's
``--holdout`` alike, so that a product lands in the same split everywhere and on every machine.
"""

from __future__ import annotations

import hashlib
from typing import Any

# The split hashes the id with this salt. A plain sha256(id) is what anyone would pick to carve a test
# set out of a catalogue before handing it over, and then *every* id handed over lies above the cut:
# ../shared/data's 5,899 ids all have sha256 fractions >= 0.25, so an unsalted 25% split of it has no test
# item at all. Changing the salt moves products between splits: it is part of the split's version.
SPLIT_SALT = "priceloop-split-v2"


def in_holdout(item_id: Any, share: float) -> bool:
    """Stable test membership: the first 8 bytes of sha256(salt + id) as a fraction below ``share``."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
