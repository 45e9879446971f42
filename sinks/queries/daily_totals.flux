// Per day and provider/model: requests by status, and the sums of cost_usd and tokens (prompt, cached prompt,
// completion, reasoning).
// Variables prepended by sinks/flux.py: bucket, start, stop, provider, model, workload ("" = any).
base = from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "llm_request")
    |> filter(fn: (r) => provider == "" or r.provider == provider)
    |> filter(fn: (r) => model == "" or r.model == model)
    |> filter(fn: (r) => workload == "" or r.workload == workload)

// e2e_ms is present on every request, ok or failed, so counting it counts requests.
base
    |> filter(fn: (r) => r._field == "e2e_ms")
    |> group(columns: ["provider", "model", "status"])
    |> aggregateWindow(every: 1d, fn: count, createEmpty: false, timeSrc: "_start")
    |> keep(columns: ["_time", "provider", "model", "status", "_value"])
    |> yield(name: "requests")

base
    |> filter(fn: (r) => r._field == "cost_usd" or r._field == "prompt_tokens" or r._field == "completion_tokens"
        or r._field == "cached_prompt_tokens" or r._field == "reasoning_tokens")
    |> toFloat()
    |> group(columns: ["provider", "model", "_field"])
    |> aggregateWindow(every: 1d, fn: sum, createEmpty: false, timeSrc: "_start")
    |> keep(columns: ["_time", "provider", "model", "_field", "_value"])
    |> yield(name: "sums")
