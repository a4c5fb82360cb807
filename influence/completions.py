"""Examples for causal LMs: read from a dataset, rendered as segments, tokenized into Hugging Face batches.

Three shapes of data, from the same sources as classification data:

* documents (a ``text`` column): the whole document is the completion;
* ``prompt`` and ``completion`` columns;
* labelled texts (a classifier's ``text`` and ``label``), rendered as a prompt and the class
  name as its completion ("Review: … Sentiment:" → " positive" on the demo's reviews);
* chat ``messages`` (``[{"role", "content"}, ...]``), rendered with the tokenizer's chat
  template; the assistant turns are the completion, the rest is the prompt.

An example is a list of segments, each prompt or completion, tokenized one by one and
joined, so that the completion's tokens are known without character offsets. In a batch,
``labels`` copies ``input_ids`` with −100 at prompt and padding positions: only completion
tokens enter the loss. The corrupted variant gives a seeded fraction of the training
examples the completion of another training example with a different completion — a label
flip on sentiment-style data, a mismatched answer on free text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from influence.task import IGNORE_INDEX
from job.errors import UserError

PROMPT_COLUMN, COMPLETION_COLUMN, MESSAGES_COLUMN = "prompt", "completion", "messages"
ASSISTANT = "assistant"
SHAPES = ("documents", "pairs", "labelled", "messages")
# How a labelled text reads as a prompt: the demo's reviews, and any other classifier's data.
REVIEW_TEMPLATE, LABELLED_TEMPLATE = "Review: {text}\nSentiment:", "{text}\nLabel:"


@dataclass(frozen=True)
class Segment:
    text: str
    completion: bool


@dataclass(frozen=True)
class Example:
    """One example as the model reads it: its segments in order."""

    segments: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)

    @property
    def prompt(self) -> str:
        """Everything before the last completion segment."""
        return "".join(segment.text for segment in self.segments[: self._last_completion()])

    @property
    def completion(self) -> str:
        """The last completion segment: what a query asks the model to write, what corruption swaps."""
        return self.segments[self._last_completion()].text

    def _last_completion(self) -> int:
        return max(i for i, segment in enumerate(self.segments) if segment.completion)

    def with_completion(self, completion: str) -> "Example":
        index = self._last_completion()
        return Example(self.segments[:index] + (Segment(completion, True),) + self.segments[index + 1 :])


def examples_from_rows(
    rows: dict[str, list[Any]],
    shape: str,
    text_column: str,
    tokenizer: Any,
    spec: str,
    labels: Optional[tuple[str, list[str], str]] = None,
) -> list[Example]:
    """The rows of one split (a ``datasets`` slice as columns) as examples; ``labels`` (column, class
    names, prompt template) renders labelled texts."""
    if shape == "labelled":
        column, names, template = labels
        return [
            Example((Segment(template.format(text=_text(t, text_column, spec)), False), Segment(f" {names[y]}", True)))
            for t, y in zip(rows[text_column], rows[column])
        ]
    if shape == "pairs":
        return [
            Example((Segment(_text(p, PROMPT_COLUMN, spec), False), Segment(_text(c, COMPLETION_COLUMN, spec), True)))
            for p, c in zip(rows[PROMPT_COLUMN], rows[COMPLETION_COLUMN])
        ]
    if shape == "messages":
        return [chat_example(messages, tokenizer, spec) for messages in rows[MESSAGES_COLUMN]]
    return [Example((Segment(_text(t, text_column, spec), True),)) for t in rows[text_column]]


def _text(value: Any, column: str, spec: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"dataset {spec}: column {column!r} does not hold text")
    return value


def chat_example(messages: Any, tokenizer: Any, spec: str) -> Example:
    """A conversation rendered with the tokenizer's chat template, split where the assistant speaks.

    Each assistant turn is what the template adds from the rendering of the messages before it
    (with the generation prompt) to the rendering that includes it; the rest is the prompt.
    """
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise UserError(f"dataset {spec}: 'messages' must be lists of {{'role', 'content'}} turns")
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(f"dataset {spec} holds chat messages, but the model's tokenizer has no chat template")
    if not any(m["role"] == ASSISTANT for m in messages):
        raise UserError(f"dataset {spec}: a conversation has no assistant turn to score")

    def render(turns: list, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)

    segments: list[Segment] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        before = render(messages[:index], True)
        after = render(messages[: index + 1], False)
        if not (before.startswith(done) and after.startswith(before)):
            raise UserError(f"dataset {spec}: the chat template does not render conversations incrementally")
        segments += [Segment(before[len(done) :], False), Segment(after[len(before) :], True)]
        done = after
    rest = render(messages, False)[len(done) :]
    if rest:
        segments.append(Segment(rest, False))
    return Example(tuple(segment for segment in segments if segment.text))


# ------------------------------------------------------------------ tokenizing
@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    completion: list[bool]  # per token


def tokenize(example: Example, tokenizer: Any, max_length: int) -> Tokenized:
    """Segments tokenized one by one (after the special tokens the tokenizer puts before a text), and
    cut to ``max_length``: from the start of the prompt, so that the completion survives (a long
    review keeps its end and its answer); a completion longer than that keeps its beginning. The first
    token is never marked a completion token: nothing before it predicts it, so it is never scored."""
    first = tokenizer(example.segments[0].text, add_special_tokens=True)["input_ids"]
    bare = tokenizer(example.segments[0].text, add_special_tokens=False)["input_ids"]
    prefix = first[: len(first) - len(bare)] if first[len(first) - len(bare) :] == bare else []
    ids: list[int] = []
    completion: list[bool] = []
    for segment in example.segments:
        pieces = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        ids += pieces
        completion += [segment.completion] * len(pieces)
    budget = max(max_length - len(prefix), 1)
    if len(ids) > budget:
        start = completion.index(True) if True in completion else 0
        keep = slice(len(ids) - budget, None) if len(ids) - start <= budget else slice(start, start + budget)
        ids, completion = ids[keep], completion[keep]
    completion = [False] * len(prefix) + completion
    completion[:1] = [False]
    return Tokenized(prefix + ids, completion)


def tokenize_all(examples: Sequence[Example], tokenizer: Any, max_length: int) -> list[Tokenized]:
    """Every example tokenized; one that keeps no completion token to score is refused."""
    tokenized = [tokenize(example, tokenizer, max_length) for example in examples]
    empty = [i for i, t in enumerate(tokenized) if not any(t.completion)]
    if empty:
        raise UserError(
            f"{len(empty)} example(s) (the first: #{empty[0]}) keep no completion token within --max-length "
            f"{max_length}: raise --max-length or shorten the prompts"
        )
    return tokenized


def lm_batches(tokenized: Sequence[Tokenized], pad_id: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches; ``labels`` = ``input_ids`` with −100 where no loss is taken."""
    batches = []
    for start in range(0, len(tokenized), batch_size):
        chunk = tokenized[start : start + batch_size]
        width = max(len(t.ids) for t in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, t in enumerate(chunk):
            n = len(t.ids)
            ids[row, :n] = torch.tensor(t.ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.where(torch.tensor(t.completion), ids[row, :n], IGNORE_INDEX)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def token_table(tokenized: Sequence[Tokenized]) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) token ids right-padded with -1, and the completion mask, L the longest example."""
    length = max(len(t.ids) for t in tokenized)
    ids = np.full((len(tokenized), length), -1, dtype=np.int32)
    mask = np.zeros((len(tokenized), length), dtype=np.uint8)
    for row, t in enumerate(tokenized):
        ids[row, : len(t.ids)] = t.ids
        mask[row, : len(t.ids)] = t.completion
    return ids, mask


# ------------------------------------------------------------------ corruption
def swap_completions(examples: Sequence[Example], fraction: Optional[float], seed: int) -> np.ndarray:
    """For each example, the index of the example whose completion its corrupted variant takes (itself
    when unchanged): a seeded ``fraction`` of them (all for 1.0) take the completion of a uniformly drawn
    other example whose completion differs. An example no other differs from stays as it is."""
    donors = np.arange(len(examples))
    if not fraction:
        return donors
    rng = np.random.default_rng(seed)
    count = len(examples) if fraction >= 1.0 else int(round(fraction * len(examples)))
    chosen = np.arange(len(examples)) if count == len(examples) else np.sort(rng.choice(len(examples), count, False))
    completions = np.array([example.completion for example in examples], dtype=object)
    for index in chosen:
        others = np.flatnonzero(completions != completions[index])
        if others.size:
            donors[index] = int(rng.choice(others))
    return donors


def corrupted(examples: Sequence[Example], donors: np.ndarray) -> list[Example]:
    return [example.with_completion(examples[int(j)].completion) for example, j in zip(examples, donors)]
