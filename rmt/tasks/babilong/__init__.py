"""BABILong: bAbI reader and offline generator, background text, haystacks, formatting,
data sources (generated | babi | babilong), scoring, and the registered task ``babilong``.

See docs/architecture.md ("Tasks") for the contract between these modules.
"""

from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.task import BabilongTask

__all__ = ["BabilongTask", "generate_sample"]
