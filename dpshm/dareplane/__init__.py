"""The Dareplane module toolkit, standing on its own.

Command server (:mod:`.server`, :mod:`.callback_server`, wire format in
:mod:`.protocol`, dying handler threads reported by :mod:`.threadwatch`), log
forwarding and the log server (:mod:`.logs`, :mod:`.logserver`; records on
the wire and in the log file in :mod:`.logrecord`), precise timing
(:mod:`.timing`, :mod:`.eventloop`), the in-process
:class:`~dpshm.dareplane.watcher.StreamWatcher`,
:class:`~dpshm.dareplane.ringbuffer.RingBuffer` and
:class:`~dpshm.dareplane.filterbank.FilterBank` (scipy, optional), and stopping
process trees (:mod:`.procs`).

Nothing here imports ZeroMQ, the shared-memory data path (:mod:`dpshm.shm`),
the control plane (:mod:`dpshm.control`) or the CLI: a module that only needs a
command server loads none of them.
"""
