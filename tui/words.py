"""What the views call things: reviews and labels for a classifier, queries, documents and
completions for a causal LM, so that the same screens read naturally for both."""

from __future__ import annotations

from dataclasses import dataclass

from job.options import TASK_CAUSAL_LM


@dataclass(frozen=True)
class Words:
    test: str  # one test example
    tests: str
    train: str  # one training example
    trains: str
    label: str  # what a training example says, and what corruption changes
    labels: str
    corrupted: str  # what the corrupted variant did to a training example
    task: str  # the header's name for the task
    heading: str  # before a test example's number in a view's heading
    mark: str  # a corrupted training example's cell, four characters


CLASSIFIER_WORDS = Words(
    test="test review",
    tests="test reviews",
    train="training review",
    trains="training reviews",
    label="label",
    labels="labels",
    corrupted="flipped",
    task="classifier",
    heading="Test",
    mark="flip",
)
CAUSAL_LM_WORDS = Words(
    test="query",
    tests="queries",
    train="training document",
    trains="training documents",
    label="completion",
    labels="completions",
    corrupted="swapped",
    task="causal LM",
    heading="Query",
    mark="swap",
)


def words_for(task: str) -> Words:
    return CAUSAL_LM_WORDS if task == TASK_CAUSAL_LM else CLASSIFIER_WORDS
