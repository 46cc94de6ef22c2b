//! MQTT 5.0 wire format, one file per packet.
