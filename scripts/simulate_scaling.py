"""Replicas over one shared edit store, in simulation: where 1, 4 and 16 editcache replicas saturate.

A queueing network fed with the per-replica figures measured on the development machine (docs/BENCHMARKS.md; the
defaults below cite their sections), simulated event by event with numpy's random generator (an open system:
requests arrive as a Poisson stream whatever the latency). docs/SCALING.md has the tables this prints and reads them.

Stations, each first come first served:
- per replica, the **gate** (embed, search, classifier: the decision, on the I/O pool of 2 threads), the **model**
  (ModelWorker: one generation at a time), the **write lane** (one thread: embeds an AddEdits' keys, then waits
  for the store's commit, so it is held through the store's queue too) and the **follower** (one thread: for
  each edit another replica wrote, an encoder pass that warms the gate's cache);
- shared by all replicas, the store's **write lock** (PostgreSQL's advisory lock: one write transaction at a time,
  so generations commit in order).

A query visits the gate, then the model. An edit takes the write lane (embedding), then the write lock; once it
commits, every other replica follows it: a delay drawn from the measured follow latency, then its follower's
pass. The proxy picks a replica per request by the power of two choices (Ray Serve's router: of two replicas
drawn at random, the one with fewer requests in flight).

Not modelled: a replica's stations share its CPU cores (each station here has the cores the measurement had),
Ray's proxy hop (about a millisecond on loopback), `max_queue` shedding (queues here are unbounded, so past
saturation latency grows without bound instead of RESOURCE_EXHAUSTED), parametric edits.

    .venv/bin/python scripts/simulate_scaling.py                      # the tables in docs/SCALING.md
    .venv/bin/python scripts/simulate_scaling.py --edit-share 0.9     # an ingest-heavy mix
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

Z99 = 2.3263478740408408  # the standard normal's 99th percentile


# --- service times ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exponential:
    mean_s: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean_s))

    @property
    def mean(self) -> float:
        return self.mean_s


@dataclass(frozen=True)
class LogNormal:
    """Fitted to a measured median and 99th percentile (the two figures docs/BENCHMARKS.md gives)."""

    p50_s: float
    p99_s: float

    def __post_init__(self) -> None:
        if not 0 < self.p50_s <= self.p99_s:
            raise ValueError(f"need 0 < p50 <= p99, got {self.p50_s} and {self.p99_s}")

    @property
    def sigma(self) -> float:
        return math.log(self.p99_s / self.p50_s) / Z99

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.p50_s * math.exp(self.sigma * rng.standard_normal()))

    @property
    def mean(self) -> float:
        return self.p50_s * math.exp(self.sigma**2 / 2)


Distribution = Exponential | LogNormal


# --- the event loop ----------------------------------------------------------------------------------------------


class Station:
    """`servers` identical servers in front of one FCFS queue; counts busy server-seconds for its utilisation."""

    def __init__(self, name: str, servers: int = 1) -> None:
        self.name = name
        self.servers = servers
        self.busy = 0
        self.waiting: deque[Process] = deque()
        self.busy_s = 0.0
        self._since = 0.0

    def _account(self, now: float) -> None:
        self.busy_s += self.busy * (now - self._since)
        self._since = now

    def release(self, sim: Simulation) -> None:
        self._account(sim.now)
        if self.waiting:
            sim.resume(self.waiting.popleft())  # the server passes straight to the next in line
        else:
            self.busy -= 1

    def utilisation(self, start: float, end: float) -> float:
        return self.busy_s / (self.servers * (end - start))

    def reset(self, now: float) -> None:
        self._account(now)
        self.busy_s = 0.0


Process = Generator["float | Station", None, None]  # yields a delay in seconds, or a station to take a server of


class Simulation:
    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Process]] = []
        self._order = itertools.count()

    def start(self, process: Process, delay_s: float = 0.0) -> None:
        heapq.heappush(self._events, (self.now + delay_s, next(self._order), process))

    def resume(self, process: Process) -> None:
        self.start(process)

    def run(self, until_s: float) -> None:
        """Runs the events due up to `until_s`."""
        while self._events and self._events[0][0] <= until_s:
            self.now, _, process = heapq.heappop(self._events)
            self._step(process)
        self.now = until_s

    def _step(self, process: Process) -> None:
        try:
            command = next(process)
        except StopIteration:
            return
        if isinstance(command, Station):
            command._account(self.now)
            if command.busy < command.servers:
                command.busy += 1
                self.resume(process)
            else:
                command.waiting.append(process)
        else:
            self.start(process, command)


# --- the editcache cluster ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Per-replica service times, measured on 2 CPU cores with Gemma-3-270M (docs/BENCHMARKS.md)."""

    # "Serving benchmarks", (a) with the abstaining counterfactual model, idle cores: decision out of scope.
    gate: Distribution = LogNormal(0.0203, 0.0282)
    # Same table: generation, 16 new tokens, base route.
    generate: Distribution = LogNormal(1.6056, 1.7940)
    # (b) on idle cores, 10,000 edits: the embed part of the gate (13.3 ms p50); the write lane's encoder pass per edit.
    embed: Distribution = LogNormal(0.0133, 0.0218)
    # (c) AddEdits one edit per request, 39.4 edits/s = 25.4 ms a request; less the embedding (13.3 ms), 12.1 ms is
    # the store's write (measured on SQLite, synchronous=FULL; PostgreSQL's write path was not timed on its own).
    store_write: Distribution = LogNormal(0.0121, 0.0242)
    # "Replicas over PostgreSQL": from A's reply to B answering with the edit, p50 0.103 s, p99 0.465 s.
    follow: Distribution = LogNormal(0.103, 0.465)
    gate_threads: int = 2  # the I/O pool (server/app.py)


@dataclass
class Results:
    query_s: list[float] = field(default_factory=list)
    edit_s: list[float] = field(default_factory=list)
    follow_s: list[float] = field(default_factory=list)
    utilisation: dict[str, float] = field(default_factory=dict)


class Cluster:
    def __init__(self, replicas: int, figures: Figures, rng: np.random.Generator) -> None:
        self.replicas = replicas
        self.figures = figures
        self.rng = rng
        self.sim = Simulation()
        self.gates = [Station(f"gate{r}", figures.gate_threads) for r in range(replicas)]
        self.models = [Station(f"model{r}") for r in range(replicas)]
        self.lanes = [Station(f"lane{r}") for r in range(replicas)]
        self.followers = [Station(f"follower{r}") for r in range(replicas)]
        self.store = Station("store")
        self.in_flight = [0] * replicas
        self.results = Results()
        self.measuring = False

    def stations(self) -> dict[str, list[Station]]:
        return {"gate": self.gates, "model": self.models, "write lane": self.lanes, "follower": self.followers,
                "store lock": [self.store]}

    def pick(self) -> int:
        """Ray Serve's power of two choices."""
        if self.replicas == 1:
            return 0
        a, b = self.rng.choice(self.replicas, size=2, replace=False)
        return int(a if self.in_flight[a] <= self.in_flight[b] else b)

    def arrivals(self, rate_per_s: float, edit_share: float) -> Process:
        while True:
            yield float(self.rng.exponential(1.0 / rate_per_s))
            replica = self.pick()
            edit = self.rng.random() < edit_share
            self.sim.start(self.edit(replica) if edit else self.query(replica))

    def query(self, r: int) -> Process:
        start, measured = self.sim.now, self.measuring
        self.in_flight[r] += 1
        yield self.gates[r]
        yield self.figures.gate.sample(self.rng)
        self.gates[r].release(self.sim)
        yield self.models[r]
        yield self.figures.generate.sample(self.rng)
        self.models[r].release(self.sim)
        self.in_flight[r] -= 1
        if measured:
            self.results.query_s.append(self.sim.now - start)

    def edit(self, r: int) -> Process:
        start, measured = self.sim.now, self.measuring
        self.in_flight[r] += 1
        yield self.lanes[r]
        yield self.figures.embed.sample(self.rng)
        yield self.store  # the lane's thread waits for the commit: it holds its lane meanwhile
        yield self.figures.store_write.sample(self.rng)
        self.store.release(self.sim)
        self.lanes[r].release(self.sim)
        self.in_flight[r] -= 1
        if measured:
            self.results.edit_s.append(self.sim.now - start)
        for other in range(self.replicas):
            if other != r:
                self.sim.start(self.follow(other, self.sim.now, measured))

    def follow(self, r: int, committed: float, measured: bool) -> Process:
        yield self.figures.follow.sample(self.rng)
        yield self.followers[r]
        yield self.figures.embed.sample(self.rng)
        self.followers[r].release(self.sim)
        if measured:
            self.results.follow_s.append(self.sim.now - committed)


def simulate(
    replicas: int, rate_per_s: float, edit_share: float, figures: Figures, duration_s: float, seed: int = 0,
    warmup_share: float = 0.1,
) -> Results:
    """Runs the cluster for `duration_s` of simulated time; statistics leave out the first `warmup_share` of it."""
    cluster = Cluster(replicas, figures, np.random.default_rng(seed))
    cluster.sim.start(cluster.arrivals(rate_per_s, edit_share))
    warmup = duration_s * warmup_share
    cluster.sim.run(warmup)
    for stations in cluster.stations().values():
        for station in stations:
            station.reset(warmup)
    cluster.measuring = True
    cluster.sim.run(duration_s)
    for stations in cluster.stations().values():
        for station in stations:
            station._account(duration_s)
    cluster.results.utilisation = {
        name: max(s.utilisation(warmup, duration_s) for s in stations) for name, stations in cluster.stations().items()
    }
    return cluster.results


# --- the analytic bound ------------------------------------------------------------------------------------------


def station_loads(replicas: int, edit_share: float, figures: Figures) -> dict[str, float]:
    """Utilisation of each station (the busiest of its kind) per request/s offered to the cluster, with requests
    spread evenly over the replicas: a station saturates at 1 / its load."""
    queries, edits = (1 - edit_share) / replicas, edit_share / replicas  # per replica, per request/s
    return {
        "gate": queries * figures.gate.mean / figures.gate_threads,
        "model": queries * figures.generate.mean,
        "write lane": edits * (figures.embed.mean + figures.store_write.mean),  # at least: plus the lock's queue
        "follower": edit_share * (replicas - 1) / replicas * figures.embed.mean,  # the others' writes
        "store lock": edit_share * figures.store_write.mean,  # every replica's writes
    }


def saturation(replicas: int, edit_share: float, figures: Figures) -> tuple[float, str]:
    """The request rate (per second) at which the first station reaches utilisation 1, and its name."""
    loads = station_loads(replicas, edit_share, figures)
    name = max(loads, key=lambda n: loads[n])
    return 1.0 / loads[name], name


def mm1(arrival_per_s: float, service_per_s: float) -> tuple[float, float]:
    """M/M/1: utilisation and mean time in the system (queue and service)."""
    if arrival_per_s >= service_per_s:
        raise ValueError("unstable: arrivals at or above the service rate")
    return arrival_per_s / service_per_s, 1.0 / (service_per_s - arrival_per_s)


def mmc_wait(arrival_per_s: float, service_per_s: float, servers: int) -> float:
    """M/M/c: mean wait in the queue (Erlang C)."""
    a = arrival_per_s / service_per_s  # offered load in servers
    rho = a / servers
    if rho >= 1:
        raise ValueError("unstable: utilisation at or above 1")
    below = sum(a**k / math.factorial(k) for k in range(servers))
    top = a**servers / (math.factorial(servers) * (1 - rho))
    return (top / (below + top)) / (servers * service_per_s - arrival_per_s)


# --- the report --------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def rows(
    replica_counts: list[int], loads: list[float], edit_share: float, figures: Figures, duration_s: float, seed: int
) -> Iterator[str]:
    yield ("| replicas | saturates at req/s (first station) | offered | req/s | query p50 / p99 s | edit p50 / p99 ms "
           "| follow p99 s | utilisation: model / gate / write lane / follower / store lock |")
    yield "|---|---|---|---|---|---|---|---|"
    for replicas in replica_counts:
        limit, first = saturation(replicas, edit_share, figures)
        for load in loads:
            rate = load * limit
            result = simulate(replicas, rate, edit_share, figures, duration_s, seed)
            u = result.utilisation
            yield (f"| {replicas} | {limit:.2f} ({first}) | {load:.0%} | {rate:.2f} "
                   f"| {percentile(result.query_s, 50):.2f} / {percentile(result.query_s, 99):.2f} "
                   f"| {1e3 * percentile(result.edit_s, 50):.0f} / {1e3 * percentile(result.edit_s, 99):.0f} "
                   f"| {_seconds(percentile(result.follow_s, 99))} "
                   f"| {u['model']:.2f} / {u['gate']:.2f} / {u['write lane']:.2f} / {u['follower']:.2f} "
                   f"/ {u['store lock']:.2f} |")


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"  # one replica follows nobody


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,4,16", help="replica counts (default 1,4,16)")
    parser.add_argument("--loads", default="0.5,0.8,0.95",
                        help="offered load as shares of the analytic saturation rate (default 0.5,0.8,0.95)")
    parser.add_argument("--edit-share", type=float, default=0.3,
                        help="share of requests that are AddEdits of one edit (default 0.3, as scripts/loadtest.py)")
    parser.add_argument("--generate-p50-s", type=float, help="replace the measured generation time (p50; p99 scaled)")
    parser.add_argument("--store-write-ms", type=float, help="replace the store's write (lock hold) time, p50 in ms")
    parser.add_argument("--duration-s", type=float, default=3600.0, help="simulated seconds per row (default 3600)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    figures = Figures()
    if args.generate_p50_s is not None:
        g = figures.generate
        assert isinstance(g, LogNormal)
        figures = replace(figures, generate=LogNormal(args.generate_p50_s, args.generate_p50_s * g.p99_s / g.p50_s))
    if args.store_write_ms is not None:
        s = figures.store_write
        assert isinstance(s, LogNormal)
        p50 = args.store_write_ms / 1e3
        figures = replace(figures, store_write=LogNormal(p50, p50 * s.p99_s / s.p50_s))
    print(f"edit share {args.edit_share:g}; {args.duration_s:g} simulated s per row; seed {args.seed}")
    for line in rows([int(r) for r in args.replicas.split(",")], [float(x) for x in args.loads.split(",")],
                     args.edit_share, figures, args.duration_s, args.seed):
        print(line)


if __name__ == "__main__":
    main()
