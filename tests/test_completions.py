"""Completion masks and the reference a query's greedy completion is held against."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from influence.completions import Example, Segment, tokenize
from influence.predictions import last_completion


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace words, no special token before a text (as GPT-2's tokenizer)."""
    words = ["<pad>", "a", "b", "c", "d", "e"]
    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")


def test_a_document_without_a_start_token_does_not_count_its_first_token():
    """Nothing predicts the first token, so it is never scored; the mask says so."""
    tokenized = tokenize(Example((Segment("a b c", True),)), word_tokenizer(), max_length=16)
    assert tokenized.ids == [1, 2, 3]
    assert tokenized.completion == [False, True, True]


def test_a_prompt_keeps_the_completion_mask_on_the_completion():
    tokenized = tokenize(Example((Segment("a b", False), Segment(" c d", True))), word_tokenizer(), max_length=16)
    assert tokenized.completion == [False, False, True, True]


def test_the_reference_of_a_multi_turn_query_is_its_last_completion():
    """Two assistant turns (positions 2-3 and 6-7): the query asks for the last one."""
    mask = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0], dtype=np.uint8)
    assert last_completion(mask).tolist() == [6, 7]
    assert last_completion(np.array([0, 1, 1, 1], dtype=np.uint8)).tolist() == [1, 2, 3]
