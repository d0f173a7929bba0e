#!/usr/bin/env python3
"""Checks of bench_peers.py's pure parts: how perf samples are bucketed, how rounds are
paired, how nginx's count is judged, how wrk2's output is read. Standard library only:
`python3 scripts/test_bench_peers.py`."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers as bp  # noqa: E402


def sample(period: int, *frames: tuple[str, str]) -> str:
    """One sample as `perf script -F period,ip,sym,dso` prints it, leaf frame first."""
    lines = [f"    {period} "]
    lines += [f"\t    ffffffff8100{i:04x} {sym} ({dso})" for i, (sym, dso) in enumerate(frames)]
    return "\n".join(lines)


K = "[kernel.kallsyms]"


class CpuBuckets(unittest.TestCase):
    def test_each_path_lands_in_its_bucket(self):
        script = "\n\n".join([
            # The send's own transmit, then a softirq inside the same send: softirq wins.
            sample(100, ("tcp_write_xmit", K), ("__x64_sys_sendto", K), ("syscall", "libc.so.6")),
            sample(200, ("tcp_v4_rcv", K), ("handle_softirqs", K), ("__x64_sys_sendto", K)),
            sample(30, ("tcp_recvmsg", K), ("__x64_sys_recvfrom", K)),
            sample(40, ("ep_poll", K), ("do_epoll_wait", K), ("__x64_sys_epoll_wait", K)),
            # Blocking inside epoll_wait is the scheduler's, not epoll's.
            sample(5, ("__schedule", K), ("schedule", K), ("do_epoll_wait", K)),
            sample(7, ("ep_insert", K), ("__x64_sys_epoll_ctl", K)),
            sample(9, ("ksys_write", K), ("__x64_sys_write", K)),
            sample(11, ("vfs_read", K), ("ksys_read", K)),
            sample(3, ("asm_sysvec_apic_timer_interrupt", K)),
            # A Rust symbol with spaces in user space; the leaf decides user against kernel.
            sample(50, ("<core::iter::Map<I, F> as Iterator>::next", "blast"), ("main", "blast")),
            sample(13, ("__vdso_clock_gettime", "[vdso]")),
        ]) + "\n\n"
        got = bp.cpu_buckets(script)
        self.assertEqual(set(got), set(bp.PERF_BUCKETS))
        self.assertEqual(got, {"softirq": 200, "sched": 5, "epoll_ctl": 7, "epoll_wait": 40,
                               "send": 109, "recv": 41, "kernel": 3, "user": 63})

    def test_headers_and_empty_blocks_are_skipped(self):
        script = "# a comment\n\n\n" + sample(10, ("x", "blast")) + "\n\n    77 \n\n"
        self.assertEqual(sum(bp.cpu_buckets(script).values()), 10)
        self.assertEqual(sum(bp.cpu_buckets("").values()), 0)


def run(tool: str, rnd: int, cpu, requests=None, nginx=None) -> dict:
    return {"tool": tool, "round": rnd, "nginx_requests": nginx,
            "metrics": {"cpu_us_per_req": cpu, "requests": requests}}


class Rounds(unittest.TestCase):
    def test_paired_ratios_use_the_same_round(self):
        runs = {"wrk": [run("wrk", 1, 10.0), run("wrk", 2, 20.0), run("wrk", 3, 8.0)],
                "blast": [run("blast", 1, 9.0), run("blast", 2, 16.0), run("blast", 3, None)]}
        # Rounds 1 and 2: 0.9 and 0.8; round 3 has no figure for blast and is left out.
        self.assertAlmostEqual(bp.paired_cpu_ratios(runs)["blast"], 0.85)
        self.assertNotIn("wrk", bp.paired_cpu_ratios(runs))
        # One round gives no paired ratio.
        self.assertEqual(bp.paired_cpu_ratios({"wrk": runs["wrk"][:1],
                                               "blast": runs["blast"][:1]}), {})

    def test_count_check(self):
        exact = [run("blast", 1, 1.0, requests=100, nginx=100)]
        self.assertEqual(bp.count_check(exact, 10), "✓")
        in_flight = [run("wrk", 1, 1.0, requests=100, nginx=104),
                     run("wrk", 2, 1.0, requests=100, nginx=101)]
        self.assertEqual(bp.count_check(in_flight, 10), "+4")
        self.assertEqual(bp.count_check([run("x", 1, 1.0, requests=100, nginx=99)], 10), "✗ -1")
        self.assertEqual(bp.count_check([run("x", 1, 1.0, requests=100, nginx=None)], 10), "—")


WRK2_OUT = """Running 10s test @ http://127.0.0.1:18081/
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  503.11us   9.87ms   70.00%
    Req/Sec    20.00k     1.00k   22.00k    80.00%
  Latency Distribution (HdrHistogram - Recorded Latency)
 50.000%    0.98ms
 75.000%    1.30ms
 90.000%    1.60ms
 99.000%    2.50ms
 99.900%    5.00ms
 99.990%    9.00ms
100.000%    9.87ms

  199990 requests in 10.00s, 30.00MB read
Requests/sec:  19999.00
Transfer/sec:      3.00MB
"""


class OpenLoopPeers(unittest.TestCase):
    def test_wrk2_percentiles_and_counts(self):
        m = bp.parse_wrk2({"stdout": WRK2_OUT}, None)
        self.assertEqual(m["requests"], 199990)
        self.assertEqual(m["rps"], 19999.0)
        self.assertEqual((m["p50_us"], m["p90_us"], m["p99_us"], m["p999_us"]),
                         (980.0, 1600.0, 2500.0, 5000.0))
        self.assertEqual(m["errors"], 0)

    def test_pair_ratio_matches_rounds(self):
        run = lambda rnd, cpu: {"round": rnd, "metrics": {"cpu_us_per_req": cpu}}  # noqa: E731
        runs = {"blast": [run(1, 10.0), run(2, 12.0), run(3, None)],
                "oha": [run(1, 20.0), run(2, 12.0), run(3, 5.0)]}
        cpu = lambda r: r["metrics"]["cpu_us_per_req"]  # noqa: E731
        self.assertAlmostEqual(bp.pair_ratio(runs, "blast", "oha", cpu), 0.75)
        self.assertIsNone(bp.pair_ratio(runs, "blast", "wrk2", cpu))


if __name__ == "__main__":
    unittest.main()
