// p95 TTFT and request count of every closed window of the demo, one row per window and endpoint.
// Bound by the caller: bucket (string), window (string, e.g. "10s").
from(bucket: bucket)
  |> range(start: -2h)
  |> filter(fn: (r) => r._measurement == "llm_window" and r.window == window)
  |> filter(fn: (r) => r._field == "ttft_p95_ms" or r._field == "count" or r._field == "error_rate")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
  |> sort(columns: ["_time", "provider"])
