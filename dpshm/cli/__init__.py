"""The ``dpshm`` command line: one module per command group.

:mod:`.main` (the entry point, ``logserver``) and :mod:`.supervisor` (``up``,
``down``, ``ls``, ``tail``, ``logs``, ``mock``, ``demo``).
"""
