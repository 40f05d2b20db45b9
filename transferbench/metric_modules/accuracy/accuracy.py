"""Accuracy: the share of predictions equal to their reference, by scikit-learn (shipped so it loads offline)."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy = number of correct predictions / number of predictions, in [0, 1]."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy (float): the share of exact matches.
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if not len(references):  # scikit-learn refuses empty input; an empty eval split has no accuracy
            return {"accuracy": float("nan")}
        return {"accuracy": float(accuracy_score(references, predictions))}
