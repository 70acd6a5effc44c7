"""MQTT behaviour checked with paho-mqtt, an independent client.

Starts the mqttd binary given as argv[1] on a free loopback port, runs each
case with fresh client ids, prints one line per check and exits 1 if any
failed. Every wait is bounded. Run through scripts/paho-tests.sh.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
PORT = 0
FAILURES = []


def check(name, cond, got=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  (got {got!r})"), flush=True)
    if not cond:
        FAILURES.append(name)


def wait(cond, secs=3.0):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def props(kind, **values):
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Client:
    """A paho client that records what it receives."""

    def __init__(self, cid, v5=True, clean=True, connect_props=None, will=None, keepalive=60):
        self.msgs, self.subacks, self.unsubacks = [], [], []
        self.connack = None
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cid,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else clean,
        )
        self.c.on_message = lambda c, u, m: self.msgs.append(m)
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", (f, rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.append(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.unsubacks.append(rcs)
        if will:
            topic, payload, qos, will_props = will
            self.c.will_set(topic, payload, qos, False, properties=will_props)
        if v5:
            self.c.connect(HOST, PORT, keepalive, clean_start=clean, properties=connect_props)
        else:
            self.c.connect(HOST, PORT, keepalive)
        self.c.loop_start()
        if not wait(lambda: self.connack is not None):
            raise RuntimeError(f"{cid}: no CONNACK")

    def subscribe(self, *args, **kwargs):
        n = len(self.subacks)
        self.c.subscribe(*args, **kwargs)
        if not wait(lambda: len(self.subacks) > n):
            raise RuntimeError("no SUBACK")
        return self.subacks[-1]

    def payloads(self):
        return [m.payload for m in self.msgs]

    def stop(self, disconnect_props=None):
        self.c.disconnect(properties=disconnect_props)
        time.sleep(0.1)
        self.c.loop_stop()

    def kill(self):
        """Drops the connection without DISCONNECT."""
        self.c.loop_stop()
        self.c.socket().close()


def case_properties_forwarded():
    s = Client("props-sub")
    s.subscribe("props/t", 2)
    p = Client("props-pub")
    pp = props(
        PacketTypes.PUBLISH,
        UserProperty=[("a", "1"), ("b", "2")],
        ContentType="text/plain",
        ResponseTopic="props/reply",
        CorrelationData=b"cd",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=100,
    )
    for q in (0, 1, 2):
        p.c.publish("props/t", f"m{q}", q, properties=pp)
    wait(lambda: len(s.msgs) >= 3)
    check("QoS 0/1/2 delivered at the publish QoS", [m.qos for m in s.msgs] == [0, 1, 2], [m.qos for m in s.msgs])
    if s.msgs:
        mp = s.msgs[0].properties
        check("user properties forwarded in order", getattr(mp, "UserProperty", None) == [("a", "1"), ("b", "2")])
        check("content type forwarded", getattr(mp, "ContentType", None) == "text/plain")
        check("response topic forwarded", getattr(mp, "ResponseTopic", None) == "props/reply")
        check("correlation data forwarded", getattr(mp, "CorrelationData", None) == b"cd")
        check("payload format indicator forwarded", getattr(mp, "PayloadFormatIndicator", None) == 1)
        left = getattr(mp, "MessageExpiryInterval", 0)
        check("remaining message expiry forwarded", 0 < left <= 100, left)
    s.stop()
    p.stop()


def case_retain_options():
    p = Client("ret-pub")
    p.c.publish("ret/t", "kept", 1, retain=True)
    time.sleep(0.2)
    s = Client("ret-sub")
    s.subscribe("ret/t", options=SubscribeOptions(qos=1, retainHandling=0))
    wait(lambda: s.msgs)
    check("retained message sent on subscribe with RETAIN", [(m.payload, m.retain) for m in s.msgs] == [(b"kept", True)])
    s.msgs.clear()
    s.subscribe("ret/t", options=SubscribeOptions(qos=1, retainHandling=1))
    s.subscribe("ret/#", options=SubscribeOptions(qos=1, retainHandling=2))
    time.sleep(0.3)
    check("retain handling 1 (existing) and 2 send nothing", s.msgs == [], s.payloads())
    rap = Client("ret-rap")
    rap.subscribe("ret/t", options=SubscribeOptions(qos=1, retainAsPublished=True))
    wait(lambda: rap.msgs)
    rap.msgs.clear()
    p.c.publish("ret/t", "again", 1, retain=True)
    wait(lambda: rap.msgs and s.msgs)
    check("retain as published keeps RETAIN", [m.retain for m in rap.msgs] == [True], [m.retain for m in rap.msgs])
    check("otherwise RETAIN is cleared on forward", [m.retain for m in s.msgs] == [False], [m.retain for m in s.msgs])
    p.c.publish("ret/t", "", 1, retain=True)
    time.sleep(0.2)
    late = Client("ret-late")
    late.subscribe("ret/t", 1)
    time.sleep(0.3)
    check("empty retained payload clears the topic", late.msgs == [], late.payloads())
    for c in (p, s, rap, late):
        c.stop()


def case_no_local_and_subscription_ids():
    s = Client("nl")
    s.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
    s.c.publish("nl/t", "mine", 1)
    time.sleep(0.3)
    check("no local: own message not delivered", s.msgs == [], s.payloads())
    s.stop()
    s = Client("sid")
    s.subscribe("sid/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    s.subscribe("sid/+", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
    s.c.publish("sid/a", "x", 1)
    wait(lambda: s.msgs)
    time.sleep(0.2)
    check("overlapping subscriptions: one delivery", len(s.msgs) == 1, len(s.msgs))
    ids = sorted(getattr(s.msgs[0].properties, "SubscriptionIdentifier", [])) if s.msgs else None
    check("both subscription identifiers on it", ids == [7, 9], ids)
    s.stop()


def case_session_expiry():
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    s = Client("exp", connect_props=cp)
    s.subscribe("exp/t", 1)
    s.stop()
    p = Client("exp-pub")
    p.c.publish("exp/t", "queued", 1)
    p.c.publish("exp/t", "short", 1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    time.sleep(2.2)
    p.stop()
    s = Client("exp", clean=False, connect_props=cp)
    check("session present after reconnect", s.connack[0].session_present, s.connack)
    wait(lambda: s.msgs)
    time.sleep(0.3)
    check("queued message delivered, expired one dropped", s.payloads() == [b"queued"], s.payloads())
    s.stop(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    time.sleep(0.2)
    s = Client("exp", clean=False, connect_props=cp)
    check("expiry 0 set on DISCONNECT ends the session", not s.connack[0].session_present, s.connack)
    s.stop(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))


def case_will_delay():
    sub = Client("will-sub")
    sub.subscribe("will/#", 1)
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=30)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    w = Client("will-a", connect_props=cp, will=("will/a", "gone-a", 1, wp))
    w.kill()
    time.sleep(0.5)
    back = Client("will-a", clean=False, connect_props=cp)
    time.sleep(2.5)
    check("reconnecting within the will delay cancels the will", sub.msgs == [], sub.payloads())
    back.stop(props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    w = Client("will-b", connect_props=cp, will=("will/b", "gone-b", 1, wp))
    started = time.time()
    w.kill()
    arrived = wait(lambda: sub.msgs, 5)
    elapsed = time.time() - started
    check("will published after its delay", arrived and sub.payloads() == [b"gone-b"] and elapsed >= 1.5, (sub.payloads(), elapsed))
    sub.stop()


def case_shared_subscriptions():
    a, b = Client("sh-a"), Client("sh-b")
    a.subscribe("$share/g/sh/t", 1)
    b.subscribe("$share/g/sh/t", 1)
    p = Client("sh-pub")
    for i in range(20):
        p.c.publish("sh/t", str(i), 1)
    wait(lambda: len(a.msgs) + len(b.msgs) >= 20)
    time.sleep(0.2)
    check("shared subscription: each message to one member", len(a.msgs) + len(b.msgs) == 20, (len(a.msgs), len(b.msgs)))
    check("shared subscription: both members get some", a.msgs and b.msgs, (len(a.msgs), len(b.msgs)))
    for c in (a, b, p):
        c.stop()


def case_limits_from_client():
    # Topic aliases towards a client that allows them: the first PUBLISH
    # carries topic and alias, later ones the alias only (paho does not
    # resolve incoming aliases, so their topic reads as empty).
    s = Client("alias", connect_props=props(PacketTypes.CONNECT, TopicAliasMaximum=5))
    s.subscribe("alias/t", 0)
    p = Client("alias-pub")
    for i in range(3):
        p.c.publish("alias/t", str(i), 0)
    wait(lambda: len(s.msgs) >= 3)
    check("server topic alias used after the first message", [m.topic for m in s.msgs] == ["alias/t", "", ""], [m.topic for m in s.msgs])
    s.stop()
    # Maximum packet size: a message too large for the client is skipped.
    s = Client("mps", connect_props=props(PacketTypes.CONNECT, MaximumPacketSize=100))
    s.subscribe("mps/t", 1)
    p.c.publish("mps/t", "x" * 500, 1)
    p.c.publish("mps/t", "small", 1)
    wait(lambda: s.msgs)
    time.sleep(0.2)
    check("packet over the client's maximum size not sent", s.payloads() == [b"small"], [len(x) for x in s.payloads()])
    s.stop()
    # Receive maximum: everything still arrives, in order.
    s = Client("fc", connect_props=props(PacketTypes.CONNECT, ReceiveMaximum=2))
    s.subscribe("fc/t", 1)
    for i in range(20):
        p.c.publish("fc/t", str(i), 1)
    wait(lambda: len(s.msgs) >= 20, 5)
    check("receive maximum 2: all 20 delivered in order", s.payloads() == [str(i).encode() for i in range(20)], s.payloads())
    s.stop()
    p.stop()


def case_connect_and_unsubscribe():
    s = Client("")
    assigned = getattr(s.connack[2], "AssignedClientIdentifier", None)
    check("empty client id gets an assigned identifier", bool(assigned), s.connack)
    s.c.unsubscribe("never/subscribed")
    wait(lambda: s.unsubacks)
    code = s.unsubacks[0][0].value if s.unsubacks else None
    check("UNSUBACK 0x11 for a filter never subscribed", code == 0x11, code)
    s.stop()


def case_versions_interoperate():
    v3 = Client("v3-sub", v5=False)
    v3.subscribe("mix/t", 1)
    v5 = Client("v5-sub")
    v5.subscribe("mix/t", 1)
    v5.c.publish("mix/t", "from5", 1, properties=props(PacketTypes.PUBLISH, UserProperty=[("k", "v")]))
    v3.c.publish("mix/t", "from3", 1)
    wait(lambda: len(v3.msgs) >= 2 and len(v5.msgs) >= 2)
    check("3.1.1 subscriber gets 5.0 and 3.1.1 messages", sorted(v3.payloads()) == [b"from3", b"from5"], v3.payloads())
    check("5.0 subscriber gets both", sorted(v5.payloads()) == [b"from3", b"from5"], v5.payloads())
    v3.stop()
    v5.stop()


def _frame(first, body):
    out, n = bytearray([first]), len(body)
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def _read_packet(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed")
            buf += chunk
        return buf

    first = exact(1)[0]
    length, shift = 0, 0
    while True:
        b = exact(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, exact(length)


def _connack_receive_maximum(body):
    """The Receive Maximum of a 5.0 CONNACK body (65535 if absent)."""
    props = body[3:]  # flags, code, then the property length (one byte here)
    i, n = 0, body[2]
    sizes = {0x11: 4, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
    while i < n:
        pid = props[i]
        i += 1
        if pid == 0x21:
            return int.from_bytes(props[i:i + 2], "big")
        if pid in sizes:
            i += sizes[pid]
        else:  # a string property: two-byte length
            i += 2 + int.from_bytes(props[i:i + 2], "big")
    return 65535


def case_flow_control2():
    # The Paho interoperability suite's test_flow_control2 (client_test5.py):
    # a client sends one QoS 2 PUBLISH more than the broker's Receive
    # Maximum, releasing each as its PUBREC arrives (PUBREL), and must read
    # DISCONNECT 0x93 - not a connection reset. Raw socket, as the suite's
    # own client: paho-mqtt keeps within the window by itself.
    sock = socket.create_connection((HOST, PORT), timeout=5)
    props = bytes([0x21, 0, 2, 0x11, 0, 0, 0, 0])  # Receive Maximum 2, Session Expiry 0
    body = b"\x00\x04MQTT\x05\x02\x00\x3c" + bytes([len(props)]) + props + b"\x00\x0aflowcontrl"
    sock.sendall(_frame(0x10, body))
    first, connack = _read_packet(sock)
    rm = _connack_receive_maximum(connack)
    outcome = None
    try:
        for i in range(1, rm + 2):
            payload = b"message %d" % i
            pub = b"\x00\x07fc2/top" + i.to_bytes(2, "big") + b"\x00" + payload
            sock.sendall(_frame(0x34, pub))
        while outcome is None:
            first, body = _read_packet(sock)
            if first == 0x50:  # PUBREC: release it, as the suite's client does
                sock.sendall(_frame(0x62, body[:2]))
            elif first == 0xE0:
                outcome = ("disconnect", body[0] if body else 0)
    except (OSError, EOFError) as e:
        outcome = ("error", repr(e))
    sock.close()
    check("test_flow_control2: DISCONNECT 0x93 read, no reset", outcome == ("disconnect", 0x93), outcome)


CASES = [
    case_properties_forwarded,
    case_retain_options,
    case_no_local_and_subscription_ids,
    case_session_expiry,
    case_will_delay,
    case_shared_subscriptions,
    case_limits_from_client,
    case_connect_and_unsubscribe,
    case_versions_interoperate,
    case_flow_control2,
]


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_broker(binary, tmp):
    global PORT
    PORT = free_port()
    log = open(os.path.join(tmp, "mqttd.log"), "w")
    proc = subprocess.Popen(
        [binary, "--listen", f"{HOST}:{PORT}", "--control-socket", os.path.join(tmp, "mqttd.sock"),
         "--data-dir", os.path.join(tmp, "data"), "--http", "off"],
        stdout=log,
        stderr=log,
    )

    def accepting():
        try:
            socket.create_connection((HOST, PORT), timeout=0.2).close()
            return True
        except OSError:
            return False

    if not wait(accepting, 10):
        proc.kill()
        proc.wait()
        sys.exit(f"mqttd did not start on port {PORT}; log: {keep_log(log.name)}")
    return proc


def keep_log(path):
    """Copies the broker's log out of the temporary directory (which goes
    when the run ends) to KEPT_LOG, and prints it; returns the kept path."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        return f"{path} (unreadable: {e})"
    os.makedirs(os.path.dirname(KEPT_LOG), exist_ok=True)
    with open(KEPT_LOG, "w") as f:
        f.write(text)
    sys.stderr.write(f"--- mqttd log ---\n{text}--- end of mqttd log ---\n")
    return KEPT_LOG


# Where a failed run's broker log is kept (the temporary directory goes).
KEPT_LOG = os.environ.get("MQTTD_PAHO_LOG", os.path.abspath("target/paho-tests/mqttd.log"))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(sys.argv[1], tmp)
        try:
            for case in CASES:
                print(f"-- {case.__name__}", flush=True)
                try:
                    case()
                except Exception as e:  # a case that cannot run is a failure
                    check(f"{case.__name__} ran", False, repr(e))
        finally:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()
                FAILURES.append("mqttd stopped within 10 s of SIGTERM")
            if broker.returncode not in (0, None):
                FAILURES.append(f"mqttd exit code {broker.returncode}")
            if FAILURES:
                print(f"mqttd log kept at {keep_log(os.path.join(tmp, 'mqttd.log'))}")
    print(f"paho interop: {len(FAILURES)} failure(s)" + (f": {FAILURES}" if FAILURES else ""))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
