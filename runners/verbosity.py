"""How much transferbench and the libraries under it print: -q / -v, progress bars, library log levels."""
from __future__ import annotations

import logging
import os
import sys
import warnings

_HANDLER = logging.StreamHandler(sys.stderr)  # transferbench's own lines (per-epoch lines, warnings); added once


def set_verbosity(verbosity: int = 0) -> None:
    """Our progress bars and result lines are the output; library load reports are noise unless -v asks for them.
    verbosity: -1 and below (-q) warnings only, no bars; 0 our info lines; 1 (-v) libraries' info too; 2 debug.
    A library's own environment variable (TRANSFORMERS_VERBOSITY, ...) wins when no flag is given."""
    logger = logging.getLogger("transferbench")
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity < 2 else logging.DEBUG)
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
    library = {-1: "error", 0: "error", 1: "info", 2: "debug"}[max(-1, min(2, verbosity))]
    put = os.environ.__setitem__ if verbosity else os.environ.setdefault
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    put("TRANSFORMERS_VERBOSITY", library)
    put("DATASETS_VERBOSITY", "warning" if library == "error" else library)
    # Download bars of the Hub (and of datasets) show where something may download; offline there is nothing
    # to show, and -q hides them. Dataset processing bars (map, splits) are shown from -v.
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    put("HF_HUB_DISABLE_PROGRESS_BARS", "1" if offline or verbosity < 0 else "0")
    put("HF_DATASETS_DISABLE_PROGRESS_BARS", "0" if verbosity > 0 else "1")
    if verbosity < 1:
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    # imported before main() (a notebook, tests): the variables came too late for them
    level = lambda name: getattr(logging, os.environ[name].upper(), logging.WARNING)  # noqa: E731
    if "datasets" in sys.modules:
        sys.modules["datasets"].utils.logging.set_verbosity(level("DATASETS_VERBOSITY"))
        if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
            sys.modules["datasets"].disable_progress_bars()
        else:
            sys.modules["datasets"].enable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity(level("TRANSFORMERS_VERBOSITY"))
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" else enable_progress_bars)()
