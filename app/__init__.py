"""Faces: the ``flywheel`` CLI and the Streamlit dashboard. Nothing imports app/.

Pages render, they do not query: every number comes from an ``analytics`` function.
"""
