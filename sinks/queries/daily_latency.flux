// Daily quantile q of TTFT, TTFA, e2e, TPOT and decode tokens/s per provider/model, from raw llm_request points
// of successful requests only (errors are counted and rated by daily_totals).
// Percentiles come from quantile() over the raw values of each day, never from averaging window p95s.
// Variables prepended by sinks/flux.py: bucket, start, stop, provider, model, workload ("" = any), q.
from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "llm_request")
    |> filter(fn: (r) => r.status == "ok")
    |> filter(fn: (r) => r._field == "ttft_ms" or r._field == "ttfa_ms" or r._field == "e2e_ms" or r._field == "tpot_ms" or r._field == "decode_tps")
    |> filter(fn: (r) => provider == "" or r.provider == provider)
    |> filter(fn: (r) => model == "" or r.model == model)
    |> filter(fn: (r) => workload == "" or r.workload == workload)
    |> group(columns: ["provider", "model", "_field"])
    |> aggregateWindow(
        every: 1d,
        fn: (column, tables=<-) => tables |> quantile(q: q, column: column, method: "exact_selector"),
        createEmpty: false,
        timeSrc: "_start",
    )
    |> keep(columns: ["_time", "provider", "model", "_field", "_value"])
