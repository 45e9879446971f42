"""Stream processing: validation and dead letters, event-time windows, quantile sketches.
The pure core is re-exported here; the faust worker lives in ``streams.app``
(``build_worker``, ``run_worker``, ``WorkerConfig``) and is started by ``tokenpulse worker``."""

from tokenpulse.streams.aggregate import PaneAccumulator, StatsKey, window_stats
from tokenpulse.streams.dedup import DedupHorizon
from tokenpulse.streams.engine import Outcome, PartitionWindows, WindowConfig
from tokenpulse.streams.sketch import RELATIVE_ACCURACY, QuantileSketch
from tokenpulse.streams.watermark import Watermark
from tokenpulse.streams.windows import WindowSpec, WindowSpecError, pane_size_ns, parse_window_specs

__all__ = [
    "RELATIVE_ACCURACY",
    "DedupHorizon",
    "Outcome",
    "PaneAccumulator",
    "PartitionWindows",
    "QuantileSketch",
    "StatsKey",
    "Watermark",
    "WindowConfig",
    "WindowSpec",
    "WindowSpecError",
    "pane_size_ns",
    "parse_window_specs",
    "window_stats",
]
