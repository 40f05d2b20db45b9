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
