"""Measures how much memory `blast mock` gives back after bursts of large request bodies.

    python3 scripts/mock_rss.py [path/to/blast] [--conns 64] [--mib 8] [--rounds 3]

Starts the mock on a free loopback port (one core), reads its resident size (VmRSS)
before, right after each burst (every connection sends one large /api/generate body and
stays open, idle, as a proxy's pool would), a few seconds later, and after the clients
closed. Prints one line per reading; stops the mock itself.
"""

import argparse
import re
import signal
import socket
import subprocess
import threading
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024


def request(sock, body):
    head = (f"POST /api/generate HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(rest) < n:
        rest += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("blast", nargs="?", default="target/debug/blast")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0)
    a = ap.parse_args()
    mock = subprocess.Popen([a.blast, "mock", "--listen", "127.0.0.1:0", "--cores", "1",
                             "--tokens", "4"], stderr=subprocess.PIPE, text=True)
    try:
        line = mock.stderr.readline()
        host, port = re.search(r"http://([0-9.]+):(\d+)", line).groups()
        prompt = "x" * (a.mib << 20)
        body = ('{"model":"m","stream":false,"prompt":"%s"}' % prompt).encode()
        print(f"start: {rss_mib(mock.pid):.0f} MiB")
        for r in range(a.rounds):
            socks = [socket.create_connection((host, int(port))) for _ in range(a.conns)]
            threads = [threading.Thread(target=request, args=(s, body)) for s in socks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(f"round {r}: after {a.conns} x {a.mib} MiB bodies: {rss_mib(mock.pid):.0f} MiB")
            time.sleep(a.settle)
            print(f"round {r}: {a.settle:.0f}s later, connections open: {rss_mib(mock.pid):.0f} MiB")
            for s in socks:
                s.close()
            time.sleep(a.settle)
            print(f"round {r}: {a.settle:.0f}s after closing: {rss_mib(mock.pid):.0f} MiB")
    finally:
        mock.send_signal(signal.SIGINT)
        try:
            mock.wait(10)
        except subprocess.TimeoutExpired:
            mock.kill()


if __name__ == "__main__":
    main()
