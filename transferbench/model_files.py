"""What preflight needs to know about a model, read from its files without importing torch, so that
`run --dry-run` imports none: transformers 5's configuration module imports torch whenever it is installed (there
is no switch to stop it), and so does every timm model module, which is what fills timm's registry.

- a transformers model's config.json, read as JSON (alias, local folder, the Hub cache, or `config:{...}`);
- whether the installed transformers has a class for its model_type in an auto mapping, read from transformers'
  own source (its mapping literals), never from a list of our own;
- whether it has tokenizer files, and whether its tokenizer.json loads (`tokenizers`, Rust);
- whether a timm architecture name exists, read from timm's source (its `@register_model` functions and
  deprecations), and whether a timm weights file is whole.

Every failure is a one-line UserError; where the run's loader has one, in its words (models.from_pretrained)."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Optional

from . import models
from .checkpoints import problem
from .errors import UserError


def resolve(ref: str) -> str:
    """models.resolve(ref) without its side effects: an alias whose weights are converted on first use names the
    file it converts from (converting needs torch; the run converts), and `config:{...}` stays as it is (its
    folder is written by the run)."""
    if ref in models.UNCONVERTED:
        return models.UNCONVERTED[ref]()
    if ref.startswith("config:"):
        return ref
    return models.resolve(ref)


def hub_file(repo_id: str, filename: str) -> Optional[str]:
    """`filename` of Hub repo `repo_id` from the local cache (downloaded where the Hub is reachable), None when
    the repo has no such file. OSError when the repo cannot be reached and is not cached."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached
    if cached is not None:  # the cache records that the repo has no such file
        return None
    if constants.HF_HUB_OFFLINE:
        raise OSError(f"{repo_id}/{filename} is not in the local Hugging Face cache (HF_HUB_OFFLINE)")
    try:
        return hf_hub_download(repo_id, filename)
    except LocalEntryNotFoundError:
        raise
    except EntryNotFoundError:
        return None


def config(ref: str) -> dict:
    """The model's config.json as a dict (what AutoConfig.from_pretrained reads first)."""
    path = resolve(ref)
    if path.startswith("config:"):  # an architecture: its JSON is the config's fields (AutoConfig.for_model)
        fields = json.loads(path[len("config:"):])
        known = config_model_types()
        if known and fields.get("model_type") not in known:
            raise UserError(f"architecture config {path[len('config:'):]}: Unrecognized model identifier: "
                            f"{fields.get('model_type')}. Should contain one of the model types of transformers")
        return fields
    if os.path.isdir(path):
        file = Path(path) / "config.json"
        if not file.is_file():
            raise UserError(f"model '{ref}': cannot load {path}: it has no config.json (a folder saved with "
                            f"save_pretrained has one)")
    elif os.path.isfile(path):
        file = Path(path)
    else:
        try:
            found = hub_file(path, "config.json")
        except (OSError, ValueError):  # unreachable, not cached, not a valid repo id
            raise models.unreachable(ref) from None
        if found is None:
            raise UserError(f"model '{ref}': the Hub repo has no config.json; is it a transformers model?")
        file = Path(found)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"model '{ref}': cannot load {file}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"model '{ref}': {file} is not a JSON object")
    return data


def check_auto_class(ref: str, mapping: str, what: str) -> str:
    """Its model_type, after a one-line UserError unless transformers can load `ref`'s config and has a model
    class for it in the auto `mapping` (a *_MAPPING_NAMES of transformers.models.auto.modeling_auto); the
    checks and messages of models.from_pretrained(AutoConfig, ...) and of the auto class."""
    data = config(ref)
    model_type = data.get("model_type")
    known = config_model_types()
    remote = "AutoConfig" in (data.get("auto_map") or {})
    if remote and model_type not in known and not (ref in models.TRUSTED or resolve(ref) in models.TRUSTED):
        raise models.needs_remote_code(ref)
    if model_type is None:
        raise UserError(f"model '{ref}': its config.json has no model_type, so transformers cannot tell which "
                        f"architecture it is; give a checkpoint saved with save_pretrained")
    if known and model_type not in known and not remote:
        raise UserError(f"model '{ref}': the installed transformers does not know model_type '{model_type}' (a "
                        f"newer architecture, or a misspelt config.json); upgrade transformers or fix the config")
    names = auto_mapping(mapping)
    if names is not None and model_type not in names:
        raise UserError(f"model '{ref}' (model_type '{model_type}') is not {what}; choose a checkpoint of an "
                        f"architecture that has one")
    return model_type


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


def check_tokenizer(ref: str) -> None:
    """A one-line UserError unless `ref` ships tokenizer files (tokenizer.json must also load: `tokenizers`
    parses it as AutoTokenizer's fast tokenizer will). Vocabulary-only tokenizers (vocab.txt...) load at run time."""
    path = resolve(ref)
    if path.startswith("config:"):
        raise UserError(f"model '{ref}': an architecture config has no tokenizer; pretrain a stage from a "
                        f"checkpoint that has one")
    if os.path.isdir(path):
        found = {name: Path(path) / name for name in TOKENIZER_FILES if (Path(path) / name).is_file()}
    else:
        found, unreachable = {}, False
        for name in TOKENIZER_FILES:
            try:
                file = hub_file(path, name)
            except (OSError, ValueError):  # this one is not cached: another may be
                unreachable = True
                continue
            if file:
                found[name] = Path(file)
                break
        if not found and unreachable:
            raise models.unreachable(ref)
    if not found:
        raise UserError(f"model '{ref}': cannot load a tokenizer from {path}: none of {', '.join(TOKENIZER_FILES)} "
                        f"is there; save the tokenizer beside the model (tokenizer.save_pretrained)")
    if "tokenizer.json" in found:
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(found["tokenizer.json"]))
        except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exceptions on a malformed file
            raise UserError(f"model '{ref}': cannot load {found['tokenizer.json']}: "
                            f"{str(err).splitlines()[0][:200]}") from None


def check_timm(name: str, file: Optional[str]) -> None:
    """A one-line UserError unless timm knows architecture `name` (a registry name with an optional pretrained
    tag, or a deprecated name timm maps to a current one) and `file`, when given, exists and is whole."""
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:"):]).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"timm model '{name}': {folder} has no config.json (a folder written by timm's "
                            f"save_for_hf has one)")
    elif name.startswith("hf-hub:"):
        repo = name[len("hf-hub:"):].split("@")[0]
        try:
            found = hub_file(repo, "config.json")
        except (OSError, ValueError):
            found = None
        if found is None:
            raise UserError(f"timm model '{name}': pretrained weights cannot be downloaded here (offline or "
                            f"unreachable); give a local file as `timm:ARCH@/path/weights.safetensors`")
    else:
        known = timm_model_names()
        if known and name.split(".", 1)[0] not in known:
            raise UserError(f"unknown timm model '{name}' (see timm.list_models())")
    if file:
        weights = Path(file).expanduser()
        if not weights.is_file():
            raise UserError(f"timm model '{name}': weights file {file} does not exist")
        why = problem(weights)
        if why:
            raise UserError(f"timm model '{name}': corrupt checkpoint file {why}; save or download it again")


# --- the libraries' own tables, read from their source --------------------------------------------------------
def _source(module: str) -> Optional[Path]:
    """The file of `module` (a module of an installed package), found without importing it or its package."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _mappings(path: Path, names: set, start: Optional[dict] = None) -> dict[str, dict]:
    """The values of the module-level mappings `names` in a module's source, evaluated from its literal statements
    (`X = OrderedDict([...])`, `X = OrderedDict(**{...}, **X)`, `X.update({...})`); what the module does by
    other means is not seen, and a test compares the result with the imported library's."""
    import ast

    out = {k: dict(v) for k, v in (start or {}).items()}

    def value(node) -> dict:
        if isinstance(node, ast.Name) and node.id in out:
            return out[node.id]
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("OrderedDict", "dict"):
            d: dict = {}
            for arg in node.args:
                d.update(ast.literal_eval(arg))
            for kw in node.keywords:
                d.update(value(kw.value) if kw.arg is None else {kw.arg: ast.literal_eval(kw.value)})
            return d
        return dict(ast.literal_eval(node))

    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and getattr(stmt.targets[0], "id", None) in names:
            out[stmt.targets[0].id] = value(stmt.value)
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
              and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "update"
              and getattr(stmt.value.func.value, "id", None) in out):
            out[stmt.value.func.value.id].update(value(stmt.value.args[0]))
    return out


@functools.lru_cache(maxsize=1)
def config_model_types() -> frozenset:
    """Every model_type the installed transformers' AutoConfig knows (its CONFIG_MAPPING_NAMES); empty when its
    source is laid out otherwise (then no model_type is refused here: the run's own loading decides)."""
    try:
        found: dict = {}
        for module in ("transformers.models.auto.auto_mappings", "transformers.models.auto.configuration_auto"):
            path = _source(module)
            if path is not None:
                found = _mappings(path, {"CONFIG_MAPPING_NAMES"}, found)
        return frozenset(found.get("CONFIG_MAPPING_NAMES", ()))
    except (OSError, SyntaxError, ValueError, TypeError):
        return frozenset()


@functools.lru_cache(maxsize=None)
def auto_mapping(name: str) -> Optional[frozenset]:
    """The model_types of transformers' auto mapping `name` (e.g. MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
    read from modeling_auto's source; None when it is not found there (then nothing is refused here)."""
    path = _source("transformers.models.auto.modeling_auto")
    try:
        found = _mappings(path, {name}) if path is not None else {}
    except (OSError, SyntaxError, ValueError, TypeError):
        return None
    return frozenset(found[name]) if found.get(name) else None


@functools.lru_cache(maxsize=1)
def timm_model_names() -> frozenset:
    """Every architecture name timm's create_model accepts (registered or deprecated), read from the source of
    timm's model modules: importing them, the only way to fill its registry, imports torch. Empty when none is
    found (then no name is refused here: the run's create_model decides)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    registered = re.compile(r"@register_model\s*\n\s*def\s+(\w+)\s*\(")
    deprecated = re.compile(r"register_model_deprecations\(\s*__name__\s*,\s*\{(.*?)\}\s*\)", re.S)
    key = re.compile(r"""['"]([\w.-]+)['"]\s*:""")
    names: set = set()
    for path in (Path(list(spec.submodule_search_locations)[0]) / "models").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        names.update(registered.findall(text))
        for table in deprecated.findall(text):  # {'old_name': 'new_name.tag', ...}
            names.update(key.findall(table))
    return frozenset(names)
