"""Language modelling with RMT: next-token loss on long documents read segment by segment,
perplexity overall and by segment index (the registered task ``lm``).

See docs/architecture.md ("Tasks") for the contract between these modules.
"""

from rmt.tasks.lm.task import LmTask

__all__ = ["LmTask"]
