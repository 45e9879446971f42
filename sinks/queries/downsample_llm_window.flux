// Hourly rollups of llm_window into the long-retention bucket (run as an InfluxDB task every hour).
// Variables prepended by sinks/flux.py: bucket, rollup_bucket, org; the task option sets the schedule.
// Latency quantiles and rates are averaged per hour (a rollup for long trends, not an exact percentile);
// counts and costs are summed.
data = from(bucket: bucket)
    |> range(start: -task.every * 2)
    |> filter(fn: (r) => r._measurement == "llm_window")

data
    |> filter(fn: (r) => r._field == "count" or r._field == "cost_usd")
    |> toFloat()
    |> aggregateWindow(every: 1h, fn: sum, createEmpty: false)
    |> set(key: "_measurement", value: "llm_window_1h")
    |> to(bucket: rollup_bucket, org: org)

data
    |> filter(fn: (r) => r._field != "count" and r._field != "cost_usd")
    |> aggregateWindow(every: 1h, fn: mean, createEmpty: false)
    |> set(key: "_measurement", value: "llm_window_1h")
    |> to(bucket: rollup_bucket, org: org)
