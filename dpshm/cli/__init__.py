"""The ``dpshm`` command line: one module per command group.

:mod:`.main` (entry point, ``logserver``), :mod:`.up` (``up``, ``down``),
:mod:`.streams` (``ls``, ``tail``, ``logs``), :mod:`.demo` (``mock``, ``demo``);
:mod:`.screen` draws the stream table and the live status.
"""
