"""BABILong: bAbI reader and offline generator, background text, haystacks, formatting,
data sources (generated | babi | babilong), scoring, and the registered tasks ``babilong``
and ``babilong_cls`` (the answer as a class, for encoders).

See docs/architecture.md ("Tasks") for the contract between these modules.
"""

from rmt.tasks.babilong.classify import BabilongClsTask
from rmt.tasks.babilong.generators import generate_sample
from rmt.tasks.babilong.task import BabilongTask

__all__ = ["BabilongClsTask", "BabilongTask", "generate_sample"]
