#!/usr/bin/env python3
"""Round trip through the broker with Eclipse paho-mqtt: MQTT 3.1.1 and 5.0, QoS 0, 1 and 2.

Usage: paho_roundtrip.py HOST PORT [--websockets] [--cafile CA.pem]. With --websockets the
clients speak MQTT over WebSocket on the /mqtt path; with --cafile over TLS, trusting that CA.
Exits 0 when every message came back as sent.
"""
import argparse
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ARGS = argparse.ArgumentParser()
ARGS.add_argument("host")
ARGS.add_argument("port", type=int)
ARGS.add_argument("--websockets", action="store_true")
ARGS.add_argument("--cafile")
ARGS = ARGS.parse_args()
HOST, PORT = ARGS.host, ARGS.port
TIMEOUT = 10


def client(client_id, protocol):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport="websockets" if ARGS.websockets else "tcp",
    )
    if ARGS.websockets:
        c.ws_set_options(path="/mqtt")
    if ARGS.cafile:
        c.tls_set(ca_certs=ARGS.cafile)
    return c


def run(protocol, name):
    received = []
    done = threading.Event()
    subscribed = threading.Event()
    expected = 3

    def on_message(_c, _u, msg):
        received.append((msg.topic, msg.qos, msg.payload.decode()))
        if len(received) == expected:
            done.set()

    def on_subscribe(*_args):
        subscribed.set()

    sub = client(f"paho-sub-{name}", protocol)
    sub.on_message = on_message
    sub.on_subscribe = on_subscribe
    sub.connect(HOST, PORT)
    sub.loop_start()
    sub.subscribe(f"paho/{name}/#", qos=2)
    assert subscribed.wait(TIMEOUT), f"{name}: no SUBACK"

    pub = client(f"paho-pub-{name}", protocol)
    pub.connect(HOST, PORT)
    pub.loop_start()
    for qos in (0, 1, 2):
        info = pub.publish(f"paho/{name}/q{qos}", f"hello {qos}", qos=qos)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"{name}: publish qos {qos} not acknowledged"
    assert done.wait(TIMEOUT), f"{name}: received only {received}"
    got = sorted(received)
    want = [(f"paho/{name}/q{q}", q, f"hello {q}") for q in (0, 1, 2)]
    assert got == want, f"{name}: got {got}, want {want}"
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    print(f"paho {name}: ok")


run(mqtt.MQTTv311, "v311")
run(mqtt.MQTTv5, "v5")
