"""How numbers, labels and texts read in every view, so that the same value looks the same everywhere."""

from __future__ import annotations

import math

from store.analysis import INFLUENCE, RELATIVE

PENDING = "pending"  # a score the engine has not written yet
INVALID = "NaN!"  # a score the engine wrote as NaN or ±inf: a numerical failure, never "pending"
MISSING = "—"
NOT_AVAILABLE = "n/a"  # a relative score whose training review has no self-influence > 0 to divide by
SCORE_DIGITS = 4
# What each score is called where a view says which one it shows (titles, the pair view), and in short
# where room is scarce (the status bar, the ranking's line about the cursor row).
SCORE_NAMES = {INFLUENCE: "raw influence", RELATIVE: "relative influence"}
SCORE_SHORT = {INFLUENCE: "raw", RELATIVE: "relative"}


def score(value: float) -> str:
    """A signed influence value with four significant digits (``+1.234``, ``-5.6e-07``)."""
    if math.isnan(value) or math.isinf(value):
        return INVALID
    return f"{value:+.{SCORE_DIGITS}g}"


def fraction(value: float, digits: int = 3) -> str:
    """A number in [0, 1] such as a probability or a correlation; ``—`` when undefined."""
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def lam(value: float) -> str:
    """A regularization value as people write it: ``1e-05``, ``0.1``, ``1``."""
    return f"{value:g}"


def count(value: int) -> str:
    return f"{value:,}"


def clock(seconds: float | None) -> str:
    """Elapsed or remaining time as on a stopwatch: ``0:07``, ``2:06``, ``1:02:03``; ``—`` when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return MISSING
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate(per_second: float, unit: str) -> str:
    """Throughput such as ``12.5 batches/s`` or ``4.2 s/batch``; ``—`` before there is anything to divide."""
    if not per_second > 0 or math.isinf(per_second):
        return MISSING
    if per_second >= 1:
        return f"{per_second:,.0f} {unit}/s" if per_second >= 100 else f"{per_second:.3g} {unit}/s"
    return f"{1 / per_second:.3g} s/{singular(unit)}"


def singular(unit: str) -> str:
    """``batches`` → ``batch``, ``blocks`` → ``block``: enough English for the engine's units."""
    if unit.endswith(("ches", "shes", "xes")):
        return unit[:-2]
    return unit[:-1] if unit.endswith("s") else unit


def parameters(value: int) -> str:
    """Parameter counts the way papers write them: ``28.9M``, ``640k``, ``412``."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:.3g}{suffix}"
    return str(value)


def clip(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = one_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def one_line(text: str) -> str:
    """Collapse whitespace so that a review fits one table row."""
    return " ".join(text.split())


def short_names(names: list[str]) -> list[str]:
    """Module names cut to the part that tells them apart, as the reference notebook's ``strip_layer_names``.

    Names are grouped by their first part; a group of several drops the leading parts all of
    its names share, but never the name of a block number, and never the last part:
    ``distilbert.transformer.layer.0.ffn.lin1`` → ``layer.0.ffn.lin1``. A name alone in its
    group (a head such as ``classifier``) stays whole. Should two results coincide, the full
    names are returned.
    """
    parts = [name.split(".") for name in names]
    groups: dict[str, list[int]] = {}
    for index, pieces in enumerate(parts):
        groups.setdefault(pieces[0], []).append(index)
    result = list(names)
    for members in groups.values():
        dropped = _shared_prefix_length([parts[i] for i in members]) if len(members) > 1 else 0
        for i in members:
            result[i] = ".".join(parts[i][dropped:])
    return result if len(set(result)) == len(result) else list(names)


def dropped_prefixes(names: list[str]) -> list[str]:
    """The prefixes :func:`short_names` took off (``distilbert.transformer.``), for a line that says so."""
    prefixes = []
    for full, short in zip(names, short_names(names)):
        prefix = full[: len(full) - len(short)]
        if prefix and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def capitalized(text: str) -> str:
    """The first letter in upper case and the rest as it is (``str.capitalize`` lowers the rest,
    a module prefix's capitals included)."""
    return text[:1].upper() + text[1:]


def names_note(names: list[str]) -> str:
    """``layer names without “distilbert.transformer.”`` (empty when nothing was cut)."""
    prefixes = dropped_prefixes(names)
    return f"layer names without {', '.join(f'“{prefix}”' for prefix in prefixes)}" if prefixes else ""


def _shared_prefix_length(parts: list[list[str]]) -> int:
    shared = 0
    for pieces in zip(*parts):
        if len(set(pieces)) != 1:
            break
        shared += 1
    shared = min(shared, min(len(p) for p in parts) - 1)
    # Never past a block number's own name: "layer.0", "h.3" (the number alone reads badly).
    number = next((i for i, piece in enumerate(parts[0][: shared + 1]) if piece.isdigit()), None)
    return shared if number is None else min(shared, max(number - 1, 0))
