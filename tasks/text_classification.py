"""text-classification: AutoModelForSequenceClassification on (text, label) examples."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from transferbench import model_files, models, sources
from transferbench.config import DatasetSpec

from . import Task, TaskData, class_labels, register_task, require_columns, require_filled


class TextArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int = Field(128, gt=0)  # tokens; batches are padded to their longest example, not to this


@functools.lru_cache(maxsize=8)
def _labelled(dataset_json: str):
    """(the splits with the label column as a ClassLabel, class names, text column, label column): torch-free,
    shared by a run's tokenisation and a dry run's check."""
    dataset = DatasetSpec.model_validate_json(dataset_json)
    text, label = dataset.columns.get("text", "text"), dataset.columns.get("label", "label")
    dd = sources.load(dataset)
    require_columns(dd, {"text": text, "label": label}, dataset.source)
    require_filled(dd, text, "text", dataset.source)
    dd, labels = class_labels(dd, label, dataset.source)
    return dd, labels, text, label


@functools.lru_cache(maxsize=8)
def _tokenized(dataset_json: str, model: str, max_length: int) -> TaskData:
    """Tokenise once per (dataset, tokenizer, max_length) and process; datasets also caches the map on disk."""
    import datasets
    from transformers import AutoTokenizer, DataCollatorWithPadding

    dataset = DatasetSpec.model_validate_json(dataset_json)
    dd, labels, text, label = _labelled(dataset_json)
    tokenizer = models.from_pretrained(AutoTokenizer, model)
    tokenize = functools.partial(_tokenize, tokenizer=tokenizer, text=text, max_length=max_length)
    drop = [c for c in dd["train"].column_names if c != label]
    stamp = _tokenizer_stamp(tokenizer, model, max_length, text)
    # A fingerprint given, not derived: datasets would otherwise pickle the tokenizer to hash the function
    # (~1 s per process even when the map is cached on disk)
    dd = datasets.DatasetDict({name: split.map(tokenize, batched=True, remove_columns=drop,
                                               new_fingerprint=_fingerprint(split._fingerprint, stamp))
                               for name, split in dd.items()})
    dd = dd.rename_column(label, "labels")
    # evaluation order does not change a metric; sorted by length, its batches carry ~15% less padding
    lengths = [len(ids) for ids in dd["eval"]["input_ids"]]
    dd["eval"] = dd["eval"].select(sorted(range(len(lengths)), key=lengths.__getitem__))
    return TaskData(dd["train"], dd["eval"], DataCollatorWithPadding(tokenizer), labels,
                    identity=dataset.source + (f"/{dataset.config}" if dataset.config else ""), processor=tokenizer)


def _tokenize(batch, tokenizer, text: str, max_length: int):
    return tokenizer(batch[text], truncation=True, max_length=max_length)


def _tokenizer_stamp(tokenizer, model: str, max_length: int, text: str) -> str:
    """What the tokenised split depends on besides the input split: the tokenizer (class, name or path, the
    content of its files when it is a local folder, vocabulary size, transformers' version), max_length and the
    text column."""
    import transformers

    h = hashlib.sha256()
    for part in (type(tokenizer).__name__, tokenizer.name_or_path, models.resolve(model), len(tokenizer),
                 max_length, text, transformers.__version__):
        h.update(f"{part}|".encode())
    folder = Path(models.resolve(model))
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and ((f.suffix in {".json", ".txt", ".model"} and "token" in f.name) or f.name.startswith(
                    ("vocab", "merges", "special_tokens", "added_tokens"))):
                h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _fingerprint(split_fingerprint: str, stamp: str) -> str:
    return hashlib.sha256(f"{split_fingerprint}|{stamp}".encode()).hexdigest()[:32]


_FFN_OUT = r".*layer\.\d+\.output\.dense"  # the FFN's down projection (a regex: not attention.output.dense)


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
    feedforward_targets = {  # the feed-forward block's second layer (its input is the FFN's hidden activation)
        "bert": _FFN_OUT, "roberta": _FFN_OUT, "xlm-roberta": _FFN_OUT, "electra": _FFN_OUT, "deberta-v2": _FFN_OUT,
        "mpnet": _FFN_OUT, "albert": ["ffn_output"], "distilbert": ["lin2"], "modernbert": ["mlp.Wo"],
    }

    def load_data(self, dataset: DatasetSpec, model: str) -> TaskData:
        return _tokenized(dataset.model_dump_json(), model, self.args.max_length)

    def check_model(self, model: str) -> None:
        model_files.check_auto_class(model, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                                     "a text (sequence) classifier")
        # read from its files, not loaded (AutoTokenizer imports torch); without any, AutoTokenizer would build a
        # tokenizer of the architecture's special tokens alone, which reads every word as [UNK]
        model_files.check_tokenizer(model)

    def check_data(self, dataset: DatasetSpec, model: str) -> int:
        """The data as load_data prepares them, not tokenised (check_model checked the tokenizer's files)."""
        return len(_labelled(dataset.model_dump_json())[0]["train"])

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
