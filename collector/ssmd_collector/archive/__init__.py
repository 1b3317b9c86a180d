"""Tools that read an ssmd archive (``ssmd archive ...``), plain or sealed alike.

- ``reader.py``: the files of a feed in reading order, their lines, the events file;
- ``verify.py``: whole lines, per-sid sequences, coverage (sessions, gaps, recoveries);
- ``replay.py``: an archive as the frame source of the simulator's protocol server;
- ``book.py``: one market's order book rebuilt from snapshots and deltas;
- ``export.py``: typed Parquet tables;
- ``cli.py``: the ``ssmd archive`` commands.
"""
