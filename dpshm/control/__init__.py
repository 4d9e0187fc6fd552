"""The supervisor's control plane: its TCP commands and its workers.

:mod:`.commands` (the supervisor's ``pcommand_map`` for the Dareplane
``DefaultServer``), :mod:`.workers` (start, watch, restart and stop workers),
:mod:`.context` (what every worker runs with: ``ctx``, target loading, its
views) and :mod:`.worker_proc` (process workers: the child's entry point and
the parent's handle).
"""
