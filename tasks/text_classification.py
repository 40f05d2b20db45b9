"""text-classification: AutoModelForSequenceClassification on (text, label) examples."""
from __future__ import annotations

import functools
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from transferbench import models, sources
from transferbench.config import DatasetSpec
from transferbench.models import check_auto_class

from . import Task, TaskData, class_labels, register_task, require_columns


class TextArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int = Field(128, gt=0)  # tokens; batches are padded to their longest example, not to this


@functools.lru_cache(maxsize=8)
def _tokenized(dataset_json: str, model: str, max_length: int) -> TaskData:
    """Tokenise once per (dataset, tokenizer, max_length) and process; datasets also caches the map on disk."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    dataset = DatasetSpec.model_validate_json(dataset_json)
    text, label = dataset.columns.get("text", "text"), dataset.columns.get("label", "label")
    dd = sources.load(dataset)
    require_columns(dd, {"text": text, "label": label}, dataset.source)
    dd, labels = class_labels(dd, label, dataset.source)
    tokenizer = models.from_pretrained(AutoTokenizer, model)
    dd = dd.map(lambda b: tokenizer(b[text], truncation=True, max_length=max_length), batched=True,
                remove_columns=[c for c in dd["train"].column_names if c != label])
    dd = dd.rename_column(label, "labels")
    # evaluation order does not change a metric; sorted by length, its batches carry ~15% less padding
    lengths = [len(ids) for ids in dd["eval"]["input_ids"]]
    dd["eval"] = dd["eval"].select(sorted(range(len(lengths)), key=lengths.__getitem__))
    return TaskData(dd["train"], dd["eval"], DataCollatorWithPadding(tokenizer), labels,
                    identity=dataset.source + (f"/{dataset.config}" if dataset.config else ""), processor=tokenizer)


@register_task
class TextClassification(Task):
    name = "text-classification"
    metric_names = ("accuracy", "f1")
    Args = TextArgs
    lora_targets = {  # attention query/value projections, by the installed transformers' module names
        "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
        "electra": ["query", "value"], "albert": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
        "deberta-v2": ["query_proj", "value_proj"], "mpnet": ["q", "v"], "modernbert": ["Wqkv"],
    }

    def load_data(self, dataset: DatasetSpec, model: str) -> TaskData:
        return _tokenized(dataset.model_dump_json(), model, self.args.max_length)

    def check_model(self, model: str) -> None:
        check_auto_class(model, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "a text (sequence) classifier")

    def build_model(self, model: str, labels: list[str], pretrained: bool):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = models.from_pretrained(AutoConfig, model, num_labels=len(labels),
                                        id2label=dict(enumerate(labels)),
                                        label2id={n: i for i, n in enumerate(labels)})
        if not pretrained:  # fairness rule 1: exactly the checkpoint's config, random init
            return AutoModelForSequenceClassification.from_config(config)
        return models.from_pretrained(AutoModelForSequenceClassification, model, config=config)

    def flops_per_batch(self, params_total: int, batch) -> Optional[float]:
        return 6.0 * params_total * batch["input_ids"].numel()  # 2N forward + 4N backward per token
