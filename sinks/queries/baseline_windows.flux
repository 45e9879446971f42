// Past llm_window points, one row per window: what the regression rules need to rebuild their
// baselines after a restart. Variables prepended by sinks/flux.py: bucket, start, stop (time literals).
from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "llm_window")
    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
    |> drop(columns: ["_start", "_stop", "_measurement"])
