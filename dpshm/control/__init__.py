"""The supervisor's control plane: its TCP commands and its workers.

:mod:`.commands` (the supervisor's ``pcommand_map`` for the Dareplane
``DefaultServer``), :mod:`.workers` (start, watch, restart and stop workers) and
:mod:`.worker_proc` (what a worker runs with: ``ctx``, target loading, process
workers).
"""
