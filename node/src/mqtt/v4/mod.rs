//! MQTT 3.1 / 3.1.1 wire format, one file per packet.
