// Per provider/model: the first and the last request of the period, so a cost can be projected from the
// length of time it was observed over (a 150 s run is not a day of traffic).
// Variables prepended by sinks/flux.py: bucket, start, stop, provider, model, workload ("" = any).
base = from(bucket: bucket)
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "llm_request" and r._field == "e2e_ms")
    |> filter(fn: (r) => provider == "" or r.provider == provider)
    |> filter(fn: (r) => model == "" or r.model == model)
    |> filter(fn: (r) => workload == "" or r.workload == workload)

// first()/last() per series (each is time-ordered), then the earliest/latest of those per provider/model.
base
    |> first()
    |> group(columns: ["provider", "model"])
    |> sort(columns: ["_time"])
    |> first()
    |> keep(columns: ["_time", "provider", "model"])
    |> yield(name: "first")
base
    |> last()
    |> group(columns: ["provider", "model"])
    |> sort(columns: ["_time"])
    |> last()
    |> keep(columns: ["_time", "provider", "model"])
    |> yield(name: "last")
