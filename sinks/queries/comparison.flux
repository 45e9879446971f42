// Provider comparison over the whole period: quantile q per provider/model of TTFT, TTFA, e2e, TPOT, tokens/s,
// over successful requests only (a failed request's duration says how it failed, not how fast the provider is).
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
    |> quantile(q: q, method: "exact_selector")
    |> keep(columns: ["provider", "model", "_field", "_value"])
