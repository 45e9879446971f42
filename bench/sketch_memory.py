"""Memory per active window key (panes + sketches, and the dedup ids beside them) and a flat-memory soak.

    .venv/bin/python bench/sketch_memory.py [--keys 200] [--rate-per-key-s 2] [--soak-minutes 60]

Feeds seeded events into one ``PartitionWindows`` (windows 1m and 5m/1m, grace 10s) and measures with
tracemalloc. "Active window key" = one provider/model/workload/region with all its open panes, which
serve every window of that key (1m and the five overlapping 5m windows).
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from tokenpulse.streams.engine import PartitionWindows, WindowConfig
from tokenpulse.testing.streams import DEFAULT_START_NS, TimingFactory, default_keys

S = 1_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--rate-per-key-s", type=float, default=2.0, help="events per key per second")
    parser.add_argument("--soak-minutes", type=int, default=60, help="event-time minutes for the soak")
    args = parser.parse_args()

    keys = default_keys(args.keys)
    interval_ns = int(S / (args.rate_per_key_s * args.keys))
    per_minute = int(60 * args.rate_per_key_s * args.keys)
    factory = TimingFactory(seed=9)
    # pre-build the events so tracemalloc measures the state, not the generator
    events = list(factory.stream(keys, per_minute * 8, interval_ns=interval_ns))
    config = WindowConfig.parse(["1m", "5m/1m"], "10s")

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    state = PartitionWindows(0, config)
    for offset, event in enumerate(events):
        state.handle(offset, event)
    state.take_emitted()
    state.changelog_records()
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - base
    dedup_ids = len(state.dedup)
    snapshot = tracemalloc.take_snapshot()
    dedup_bytes = sum(
        stat.size for stat in snapshot.statistics("filename") if stat.traceback[0].filename.endswith("dedup.py")
    )
    tracemalloc.stop()
    print(
        f"keys={args.keys} rate={args.rate_per_key_s}/s/key events_in_state={len(events)} open_panes={state.open_panes}"
    )
    windows = state.open_windows
    print(f"state total: {total / 1024:.0f} KiB over {windows} open (key, window) pairs")
    print(f"  per active window key (one key's window): {total / windows / 1024:.1f} KiB")
    print(f"  per provider/model/workload/region key with all its open windows: {total / args.keys / 1024:.1f} KiB")
    print(
        f"  of which dedup ids ({dedup_ids} ids, {dedup_bytes / max(dedup_ids, 1):.0f} B/id): "
        f"{dedup_bytes / args.keys / 1024:.1f} KiB per key; panes+sketches: "
        f"{(total - dedup_bytes) / args.keys / 1024:.1f} KiB per key"
    )

    # soak: steady input over many event-time minutes; the state must stay flat once windows close
    tracemalloc.start()
    state = PartitionWindows(0, config)
    soak = TimingFactory(seed=10)
    samples = []
    offset = 0
    for minute in range(args.soak_minutes):
        start = DEFAULT_START_NS + minute * 60 * S
        for event in soak.stream(keys, per_minute, start_ns=start, interval_ns=interval_ns):
            state.handle(offset, event)
            offset += 1
        state.take_emitted()
        state.changelog_records()
        if minute % 10 == 9:
            gc.collect()
            samples.append((minute + 1, tracemalloc.get_traced_memory()[0]))
    tracemalloc.stop()
    first = samples[0][1]
    print("soak (event-time minute: traced KiB, ratio to minute 10):")
    for minute, size in samples:
        print(f"  {minute:4d}: {size / 1024:8.0f} KiB  x{size / first:.3f}")


if __name__ == "__main__":
    main()
