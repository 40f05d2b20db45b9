"""Matthews correlation coefficient (multiclass: Gorodkin's R_K), by scikit-learn (shipped so it loads offline;
the same name and output key as the Hub's evaluate-metric/matthews_correlation)."""
import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = ("Matthews correlation coefficient: the correlation between predicted and true classes, from the "
                "confusion matrix; 1 is perfect, 0 no better than chance, -1 total disagreement. Unlike accuracy it "
                "stays informative when the classes are imbalanced (the GLUE metric of CoLA).")
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    matthews_correlation (float): in [-1, 1].
"""


class MatthewsCorrelation(evaluate.Metric):
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
            return {"matthews_correlation": float("nan")}
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
