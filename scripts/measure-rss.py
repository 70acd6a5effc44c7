#!/usr/bin/env python3
"""Measures how much memory mqttd gives back after a load.

Starts the broker binary given as argument on a free port, queues N large
QoS 1 messages (default 900 x 512 KiB) for an offline persistent session,
each followed by a small retained message that stays (fragmentation),
then clears that session (reconnect with clean session) and prints the
broker's RSS: idle, loaded, 1 s after the load is gone, and after the trim
interval. Only the standard library; raw MQTT 3.1.1.

    scripts/measure-rss.py target/release/mqttd [N] [PAYLOAD_BYTES]
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def frame(first, body):
    out = bytearray([first])
    n = len(body)
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def connect(port, cid, clean):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = b"\x00\x04MQTT\x04" + bytes([0x02 if clean else 0]) + struct.pack(">H", 60)
    body += struct.pack(">H", len(cid)) + cid.encode()
    s.sendall(frame(0x10, body))
    read_packet(s)
    return s


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_packet(s):
    first = read_exact(s, 1)[0]
    n, shift = 0, 0
    while True:
        b = read_exact(s, 1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, read_exact(s, n)


def main():
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 900
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 512 * 1024
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "mqttd.yaml")
    with open(conf, "w") as f:
        f.write(
            f"listeners:\n  - name: mqtt\n    bind: 127.0.0.1:{port}\n"
            f"control:\n  socket: {tmp}/mqttd.sock\nhttp:\n  bind: 127.0.0.1:0\n"
            "log:\n  level: warn\n"
            "storage:\n  durability: memory\n"
        )
    broker = subprocess.Popen([binary, "--config", conf])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        idle = rss_mib(broker.pid)
        sub = connect(port, "rss-sub", clean=False)
        topic = b"rss/load"
        sub.sendall(frame(0x82, struct.pack(">H", 1) + struct.pack(">H", len(topic)) + topic + b"\x01"))
        read_packet(sub)
        sub.close()
        time.sleep(0.3)
        pub = connect(port, "rss-pub", clean=True)
        payload = os.urandom(size)
        # Warm-up: large messages freed at once, as under a real load,
        # which raises glibc's dynamic mmap threshold.
        for i in range(20):
            body = struct.pack(">H", 4) + b"warm" + struct.pack(">H", i + 1) + payload
            pub.sendall(frame(0x32, body))
            read_packet(pub)
        for i in range(count):
            pid = i % 65535 + 1
            body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", pid) + payload
            pub.sendall(frame(0x32, body))
            read_packet(pub)  # PUBACK: one in flight at a time
            # A small retained message that outlives the load, between the
            # large ones: it keeps the heap from shrinking at its top.
            keep = b"rss/keep/%d" % i
            pub.sendall(frame(0x31, struct.pack(">H", len(keep)) + keep + b"k" * 64))
        time.sleep(0.5)
        loaded = rss_mib(broker.pid)
        # A clean-session CONNECT destroys the queue.
        connect(port, "rss-sub", clean=True).close()
        pub.close()
        time.sleep(1)
        after1 = rss_mib(broker.pid)
        time.sleep(11)
        after12 = rss_mib(broker.pid)
        print(
            f"{os.path.basename(binary)} {count} x {size} B: idle {idle:.0f} MiB, "
            f"loaded {loaded:.0f} MiB, +1 s {after1:.0f} MiB, +12 s {after12:.0f} MiB"
        )
    finally:
        broker.terminate()
        broker.wait(timeout=10)


if __name__ == "__main__":
    main()
