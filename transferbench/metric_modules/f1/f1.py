"""Macro-F1: the unweighted mean over classes of per-class F1, by scikit-learn (shipped so it loads offline)."""
import datasets
import evaluate
from sklearn.metrics import f1_score

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
        if not len(references):  # scikit-learn refuses empty input
            return {"f1": float("nan")}
        # macro over the classes present in references or predictions (scikit-learn's default label set); every
        # such class has a true or predicted positive, so zero_division only silences the per-class warning
        return {"f1": float(f1_score(references, predictions, average="macro", zero_division=0.0))}
