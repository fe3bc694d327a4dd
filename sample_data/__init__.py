"""Seeded sample data: the traces and feedback of a RAG chat product, for demos, tests and bench.

Layout: ``world`` (scenario days, models, routing, users, traffic curve) and the text banks
(``questions``, ``answers``, rendered by ``texts``) describe the product; ``traces`` lays out
the span tree of one request into ``spans.BatchBuilder``; ``generator`` runs the seeded
simulation of sessions and feedback; ``formats`` writes it as OTLP protobuf, OTLP/JSON lines,
flat span JSONL and feedback JSONL. This package imports no other Flywheel package.
"""

from sample_data.formats import write_dataset
from sample_data.generator import Batch, generate, generate_batches, generate_feedback

__all__ = ["Batch", "generate", "generate_batches", "generate_feedback", "write_dataset"]
