"""The tutorial's hymenoptera archive: downloaded, verified file by file, moved into place atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import UserError


HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"


# sha256 over "relpath\0sha256(file)\n" lines of the extracted tree, in sorted walk order
# (see `tree_digest`): it pins all 398 files of the archive as distributed.
HYMENOPTERA_TREE_SHA256 = "09b2329aa6956906521686a682b4c4793592134e6d718c3e9769e005ec240417"


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def fetch_hymenoptera(dest: Path) -> Path:
    """Download the tutorial's archive, verify every file, and move it into place atomically."""
    from torchvision.datasets.utils import download_and_extract_archive

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        try:
            download_and_extract_archive(HYMENOPTERA_URL, download_root=tmp)
        except Exception as e:  # urllib/HTTP/SSL errors differ by platform; all mean "no download"
            raise UserError(
                f"could not download {HYMENOPTERA_URL} ({type(e).__name__}: {e}); with no network, "
                "point DATA at a local copy, e.g. `make demo DATA=/path/to/hymenoptera_data`"
            ) from None
        tree = Path(tmp) / "hymenoptera_data"
        got = tree_digest(tree)
        if got != HYMENOPTERA_TREE_SHA256:
            raise UserError(
                f"downloaded hymenoptera archive failed verification (tree sha256 {got[:12]}…, "
                f"expected {HYMENOPTERA_TREE_SHA256[:12]}…)"
            )
        shutil.move(str(tree), str(dest))
    return dest
