"""Macro-F1: the unweighted mean over classes of per-class F1 (shipped so it loads offline)."""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = ("Macro-F1: F1 = 2PR/(P+R) per class, averaged with equal weight over every class that occurs "
                "in the references or the predictions (a class with no true or predicted positive counts as 0).")
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    f1 (float): macro-averaged F1 in [0, 1].
"""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        scores = []
        for c in np.union1d(predictions, references):
            tp = np.sum((predictions == c) & (references == c))
            denom = np.sum(predictions == c) + np.sum(references == c)
            scores.append(2 * tp / denom if denom else 0.0)
        return {"f1": float(np.mean(scores)) if scores else float("nan")}
