"""Benchmark of issue 5: how close ssmd-connector is to the limit of its WebSocket library.

Run it with ``.venv/bin/python bench/run.py [--quick] [--json out.json]``; see
bench/README.md for what is measured and how to read the output.
"""
