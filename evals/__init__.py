"""Eval replay: datasets from production traces, candidate targets, evaluators, comparison.

Imports ``analytics`` and ``store``; is imported only by ``app``.
"""
