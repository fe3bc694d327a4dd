"""Ingest: bytes in, canonical span rows out, handed to ``store`` to land durably.

Codecs are pure functions at the edge (``otlp`` for OTLP protobuf and OTLP/JSON, ``jsonl``
for JSON lines, flat spans and feedback, ``files`` for files and folders); each turns raw
spans into rows through ``records.SpanBuilder``, which validates ids and times and runs the
``conventions`` normalizer, compiled from ``conventions.toml`` (conventions as data).
``messages`` pulls text out of the many message shapes SDKs send. Bad input raises or records
``IngestError(source, location, reason)``; valid records beside it still land. ``guard``
then reads guardrail results out of each batch (``guardrails``, ruled by the ``[guardrails]``
section of ``conventions.toml``, and the built-in ``detectors``) and applies the ``redaction``
policy, before anything is written.
``loader`` feeds guarded batches to ``store.writer.LakeWriter``, which acknowledges only after
fsync; the receiver guards in its decoder workers.

Imports ``store`` and nothing else of the project.
"""
