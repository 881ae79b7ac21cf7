"""Associative retrieval: N key->value pairs spread over segments, then one key is queried.

The capacity probe of the ARMT paper (Rodkin et al., 2024): the answer is in no segment the
model can see when it answers, so accuracy against N measures how many bindings a memory
holds. Generated offline with its own tiny tokenizer; registered as ``task.type=retrieval``.
"""

from rmt.tasks.retrieval.task import RetrievalTask

__all__ = ["RetrievalTask"]
