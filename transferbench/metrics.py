"""Metrics by name. The modules that ship with transferbench (accuracy, f1, matthews_correlation) load through
`evaluate` from their local paths (evaluate.load("accuracy") would need the Hub); a benchmark may also name its
verdict metric (`metric:` in a suite): any `evaluate` module (a shipped name, a local module path, or a Hub id
where the Hub is reachable) or a scikit-learn scorer as `sklearn:NAME` (a name of sklearn.metrics.get_scorer_names()).

A named metric scores predicted class ids against the references and gives one number; its direction is stated
(`higher_is_better`), except where it is known: the shipped modules, and scikit-learn scorers, which are
higher-is-better by scikit-learn's convention (losses are the `neg_*` scorers)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

from .errors import UserError, did_you_mean

METRICS_DIR = Path(__file__).with_name("metric_modules")
SKLEARN = "sklearn:"
SHIPPED_HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "matthews_correlation": True}
# what a check computes: predictions and references of three classes, as a small classification eval gives them
SAMPLE = ([0, 1, 2, 1, 0, 2], [0, 1, 1, 1, 0, 2])


def available() -> list[str]:
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


@functools.lru_cache(maxsize=None)
def load(name: str):
    import evaluate

    if name not in available():
        raise UserError(f"unknown metric '{name}'{did_you_mean(name, available())}")
    return evaluate.load(str(METRICS_DIR / name))


def is_sklearn(name: str) -> bool:
    return name.startswith(SKLEARN)


def known_direction(name: str) -> Optional[bool]:
    """Whether higher is better for a metric named `name`, where that is known without being told."""
    return True if is_sklearn(name) else SHIPPED_HIGHER_IS_BETTER.get(name)


def metric_name(spec) -> str:
    """The name a named metric is recorded under (the record's metric_name): its `key` when given, else the scorer's
    name (sklearn:f1_macro -> f1_macro) or the module's (a path's file or folder name, a Hub id's last part)."""
    return _recorded(spec.name, spec.key)


def _recorded(name: str, key: Optional[str]) -> str:
    if key:
        return key
    if is_sklearn(name):
        return name[len(SKLEARN):]
    stem = Path(name.rstrip("/")).name
    return stem[:-3] if stem.endswith(".py") else stem


def _is_local(name: str) -> bool:
    """A name meant as a local module: it exists, or it is written as a path (the Hub's ids are ORG/NAME)."""
    return Path(name).expanduser().exists() or name.endswith(".py") or name.startswith((".", "/", "~"))


def check(spec, where: str, load_it: bool = True) -> None:
    """Refuse (one-line UserError) a named metric that cannot score a run: an unknown scorer, a missing local module,
    a scorer that needs probabilities, and, with `load_it`, a module evaluate cannot load (offline: a Hub id) or
    whose output has no single number to use. A dry run checks modules without loading them (`evaluate` imports
    torch)."""
    name = spec.name
    if is_sklearn(name):
        from sklearn.metrics import get_scorer_names

        scorer = name[len(SKLEARN):]
        if scorer not in get_scorer_names():
            hint = did_you_mean(scorer, get_scorer_names())
            raise UserError(f"{where}: '{scorer}' is not a scikit-learn scorer{hint}")
    elif name not in available() and _is_local(name) and not Path(name).expanduser().exists():
        raise UserError(f"{where}: metric module '{name}' not found (a local evaluate module: a folder holding "
                        f"NAME.py, or the .py file)")
    if load_it or is_sklearn(name):  # a scorer costs no torch: its fit is checked by a dry run too
        compute = named(spec, where)
        try:
            compute(*SAMPLE)
        except UserError:
            raise
        except AttributeError as err:  # a scorer that calls predict_proba / decision_function
            raise UserError(f"{where}: '{name}' scores probabilities or decision values ({_first(err)}); transferbench "
                            f"scores predicted classes: name one that uses them, e.g. sklearn:matthews_corrcoef, "
                            f"sklearn:f1_macro, sklearn:balanced_accuracy") from None
        except Exception as err:  # noqa: BLE001 - the metric's own code: refused in one line before training
            raise UserError(f"{where}: metric '{name}' fails on class predictions: {type(err).__name__}: "
                            f"{_first(err)}") from None


def named(spec, where: str = "metric") -> Callable[[list, list], float]:
    """compute(predictions, references) -> the named metric's value (one float)."""
    return _named(spec.model_dump_json(), where)


@functools.lru_cache(maxsize=None)
def _named(spec_json: str, where: str) -> Callable[[list, list], float]:
    import json

    data = json.loads(spec_json)
    name, args, key = data["name"], data.get("args") or {}, data.get("key")
    if is_sklearn(name):
        return _scorer(name[len(SKLEARN):])
    module = _evaluate_module(name, where)
    want = _recorded(name, key)

    def compute(predictions, references) -> float:
        out = module.compute(predictions=predictions, references=references, **args)
        if not isinstance(out, dict) or not out:
            raise UserError(f"{where}: metric '{name}' returned {out!r}, not a mapping of results")
        if want in out:
            value = out[want]
        elif len(out) == 1 and not key:
            value = next(iter(out.values()))
        else:
            raise UserError(f"{where}: metric '{name}' returns {', '.join(sorted(out))}: say which with "
                            f"`key:`{did_you_mean(want, out) if key else ''}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: metric '{name}' gives {want} = {value!r}, not one number: name a key whose "
                            f"value is") from None
    return compute


def _evaluate_module(name: str, where: str):
    import evaluate

    target = str(METRICS_DIR / name) if name in available() else \
        str(Path(name).expanduser().resolve()) if _is_local(name) else name
    try:
        return evaluate.load(target)
    except Exception as err:  # noqa: BLE001 - offline Hub, a module script that fails on import: one line
        raise UserError(f"{where}: evaluate cannot load metric '{name}' ({type(err).__name__}: {_first(err)}); "
                        f"offline, name a shipped module ({', '.join(available())}), a local module path, or a "
                        f"scikit-learn scorer as sklearn:NAME") from None


def _scorer(name: str) -> Callable[[list, list], float]:
    """A scikit-learn scorer applied to given predictions: scorers call an estimator's predict, so the estimator
    here is one whose predict returns them (a classifier, with the classes seen)."""
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.metrics import get_scorer

    class Predicted(ClassifierMixin, BaseEstimator):
        def fit(self, X, y=None):
            return self

        def predict(self, X):
            return np.asarray(X)

    scorer = get_scorer(name)

    def compute(predictions, references) -> float:
        estimator = Predicted()
        estimator.classes_ = np.unique(np.concatenate([np.asarray(references), np.asarray(predictions)]))
        return float(scorer(estimator, list(predictions), list(references)))
    return compute


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
