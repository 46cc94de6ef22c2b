#!/usr/bin/env python3
"""Round trip through the broker with Eclipse paho-mqtt: MQTT 3.1.1 and 5.0, QoS 0, 1 and 2.

Usage: paho_roundtrip.py HOST PORT. Exits 0 when every message came back as sent.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HOST, PORT = sys.argv[1], int(sys.argv[2])
TIMEOUT = 10


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

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-sub-{name}", protocol=protocol)
    sub.on_message = on_message
    sub.on_subscribe = on_subscribe
    sub.connect(HOST, PORT)
    sub.loop_start()
    sub.subscribe(f"paho/{name}/#", qos=2)
    assert subscribed.wait(TIMEOUT), f"{name}: no SUBACK"

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-pub-{name}", protocol=protocol)
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
