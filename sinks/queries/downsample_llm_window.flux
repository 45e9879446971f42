// Hourly rollups into the long-retention bucket (run as an InfluxDB task every hour), from the raw
// llm_request points, so each request is counted once per hour whatever window specs the workers emit: a
// hopping spec (5m/1m) holds every request in five llm_window points, and summing those counted it five times.
// Series: provider, model, workload, region. Counts and sums are exact; latency quantiles are exact
// (exact_selector) over the hour's successful requests only; errors are counted on their own.
// Variables prepended by sinks/flux.py: bucket, rollup_bucket, org; the task option sets the schedule.
series = ["provider", "model", "workload", "region"]
data = from(bucket: bucket)
    |> range(start: -task.every * 2)
    |> filter(fn: (r) => r._measurement == "llm_request")

counted = (name, keep) => data
    |> filter(fn: (r) => r._field == "e2e_ms" and keep(r: r))
    |> group(columns: series)
    |> aggregateWindow(every: 1h, fn: count, createEmpty: false)
    |> toFloat()
    |> set(key: "_field", value: name)
    |> set(key: "_measurement", value: "llm_window_1h")
    |> to(bucket: rollup_bucket, org: org)

quantiled = (field, q, name) => data
    |> filter(fn: (r) => r._field == field and r.status == "ok")
    |> group(columns: series)
    |> aggregateWindow(
        every: 1h,
        fn: (column, tables=<-) => tables |> quantile(q: q, column: column, method: "exact_selector"),
        createEmpty: false,
    )
    |> set(key: "_field", value: name)
    |> set(key: "_measurement", value: "llm_window_1h")
    |> to(bucket: rollup_bucket, org: org)

counted(name: "count", keep: (r) => true)
counted(name: "error_count", keep: (r) => r.status == "error")

data
    |> filter(fn: (r) => r._field == "cost_usd" or r._field == "prompt_tokens" or r._field == "completion_tokens"
        or r._field == "cached_prompt_tokens" or r._field == "reasoning_tokens")
    |> toFloat()
    |> group(columns: ["provider", "model", "workload", "region", "_field"])
    |> aggregateWindow(every: 1h, fn: sum, createEmpty: false)
    |> set(key: "_measurement", value: "llm_window_1h")
    |> to(bucket: rollup_bucket, org: org)

quantiled(field: "ttft_ms", q: 0.5, name: "ttft_p50_ms")
quantiled(field: "ttft_ms", q: 0.95, name: "ttft_p95_ms")
quantiled(field: "ttfa_ms", q: 0.95, name: "ttfa_p95_ms")
quantiled(field: "e2e_ms", q: 0.95, name: "e2e_p95_ms")
quantiled(field: "tpot_ms", q: 0.95, name: "tpot_p95_ms")
quantiled(field: "decode_tps", q: 0.5, name: "decode_tps_p50")
