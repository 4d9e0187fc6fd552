"""``dpshm bench``: the benchmark suite a lab runs on its own machine.

Every figure is measured beside a baseline in the same run (a plain numpy
copy, a direct LSL inlet, or the original dareplane-utils implementation) and
reported with the ratio ``dpshm / baseline``, because shared machines are noisy
and absolute numbers from another machine mean little.

Modules, one per measured idea (each also used by the scripts in
``benchmarks/``):

* :mod:`dpshm.bench.copies` -- ``unfold_buffer()`` / ``get_window()`` vs a plain
  copy and vs the original StreamWatcher;
* :mod:`dpshm.bench.loop` -- EventLoop period error and CPU, ``sleep_s`` vs the
  originals;
* :mod:`dpshm.bench.roundtrip` -- ``UP`` round trip vs the original server;
* :mod:`dpshm.bench.fanout` -- fan-out CPU and outlet-to-consumer latency
  (supervisor + SharedStreamView vs one LSL inlet per consumer);
* :mod:`dpshm.bench.suite` -- runs them all, prints one table, writes JSON and
  the plot (:mod:`dpshm.bench.report`).

This package imports nothing heavy on import; ``dpshm bench --help`` stays fast.
"""
