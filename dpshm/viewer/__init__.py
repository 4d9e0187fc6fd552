"""The browser viewer (``dpshm view``): live stream table, workers, log tail and traces.

A separate process reads the shared-memory rings read-only and serves a page on
127.0.0.1 (:mod:`dpshm.viewer.server`); the data it shows is computed in
:mod:`dpshm.viewer.data` (stream table, windows), :mod:`dpshm.viewer.columns`
(min/max decimation, the frames' bytes), :mod:`dpshm.viewer.trace` (the trace
stream of a page) and :mod:`dpshm.viewer.side` (log tail, workers). The page itself
(``static/``) is plain HTML, CSS and JavaScript: no CDN, no build step.
"""

from dpshm.viewer.server import ViewerServer, check_view_bind, new_token

__all__ = ["ViewerServer", "check_view_bind", "new_token"]
