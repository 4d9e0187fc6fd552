"""The shared-memory data path, in the order data flows through it.

:mod:`.segment` (POSIX shared memory without the resource tracker) ->
:mod:`.ring` (the mirrored one-writer ring) -> :mod:`.feed` (one LSL inlet
writing one ring) -> :mod:`.supervisor` (all feeds, the registry and the wake
paths) -> :mod:`.doorbell` and :mod:`.bus` (wake-ups and log records) ->
:mod:`.registry` (where a supervisor announces its streams) -> :mod:`.follow`
and :mod:`.view` (a consumer finding, attaching to and reading a stream).
Streams published by processes: :mod:`.publish` (the producer writes its own
ring and wakes its consumers) registers over :mod:`.requests` (the
supervisor's request socket) with :mod:`.derived` (the supervisor's side).
"""
