"""The one error type users see: a one-line, actionable message and exit code 2."""
import difflib


class UserError(Exception):
    """Bad input (suite, dataset, model, flag). The CLI prints it on one line and exits with 2."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else a list of the valid ones."""
    choices = sorted(choices)
    # one or two letters are close to too much ('r' to 'lr'): a guess there misleads more than the list helps
    close = difflib.get_close_matches(str(word), choices, n=1) if len(str(word)) > 2 else []
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (choose from: {', '.join(choices)})"


def source_of(obj) -> str:
    """`module.qualname` of a registered class or function, or of the callable that implements a registered value
    (a mode's `prepare`, a loop's `run`)."""
    for target in (obj, getattr(obj, "prepare", None), getattr(obj, "run", None)):
        if hasattr(target, "__qualname__") and hasattr(target, "__module__"):
            return f"{target.__module__}.{target.__qualname__}"
    return repr(obj)


def check_unique(kind: str, name: str, registry: dict, newcomer) -> None:
    """Refuse a second `kind` under `name` from another source. The same object, or the same source imported again
    (a module re-import makes a new object of the same module and qualname), is not a duplicate."""
    registered = registry.get(name)
    if registered is None or registered is newcomer or source_of(registered) == source_of(newcomer):
        return
    raise UserError(f"{kind} '{name}' is registered twice: by {source_of(registered)} and by {source_of(newcomer)}; "
                    f"rename one of them")
