//! PUBLISH in both directions: validation, aliases, routing and acknowledgement of incoming
//! publishes; building outgoing ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::verdict::{Authorizing, Continuation, Request};
use super::{Close, Session};
use crate::authorize::PublishIntent;
use crate::broker::NetsplitAction;
use crate::broker::message::{ForwardedProperties, Msg};
use crate::broker::queue::Queued;
use vmq_mqtt::{self as mqtt, Packet, PacketId, Properties, PubResp, Publish, QoS, ReasonCode, topic};

impl Session {
    pub(super) fn handle_publish(&mut self, p: Publish, now: Instant) -> Result<(), Close> {
        self.broker.counters.publish_received.fetch_add(1, Ordering::Relaxed);
        if self.cfg.max_message_size > 0 && p.payload.len() > self.cfg.max_message_size {
            return Err(Close::error(
                ReasonCode::PACKET_TOO_LARGE,
                format!("payload of {} bytes exceeds max_message_size {}", p.payload.len(), self.cfg.max_message_size),
            ));
        }
        let topic = self.resolve_topic(&p)?;
        if let Err(e) = topic::validate_topic_name(&topic, self.cfg.topic_max_depth) {
            return Err(Close::error(ReasonCode::TOPIC_NAME_INVALID, format!("PUBLISH topic rejected: {e}")));
        }
        if p.qos == QoS::ExactlyOnce {
            let id = p.packet_id.map_or(0, |i| i.0);
            if self.inflight.incoming_qos2.contains(&id) {
                // A resend of a message we already routed: acknowledge again, do not route
                // twice (exactly once, method B of [MQTT-4.3.3]).
                self.emit(Packet::PubRec(PubResp { packet_id: PacketId(id), ..PubResp::default() }));
                return Ok(());
            }
        }
        if p.qos != QoS::AtMostOnce && self.incoming_unacknowledged() >= self.incoming_window() {
            return Err(Close::error(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "more unacknowledged QoS 1/2 publishes than Receive Maximum [MQTT-3.3.4-9]",
            ));
        }
        if p.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err() {
            return self.refuse_publish(
                &p,
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                "payload is not the UTF-8 its Payload Format Indicator says",
            );
        }
        self.check_rate(now);
        if let Some(authorizer) = &self.authorizer {
            if let Some(verdict) = authorizer.authorize_publish_now(&self.subject_ref(), &topic, p.qos, p.retain) {
                if let Some(refusal) = self.publish_authorized(p, topic, verdict, now)? {
                    self.emit(refusal);
                }
                return Ok(());
            }
            let publish = PublishIntent { topic: topic.clone(), qos: p.qos, retain: p.retain };
            let request = Request::AuthorizePublish { who: self.subject(), publish };
            let then = Authorizing { packet: p, topic, at: now };
            self.request(request, Continuation::Publish(Box::new(then)));
            return Ok(());
        }
        self.route_publish(p, topic, now)
    }

    /// Routes a publish that passed every check and acknowledges it (once durable when its
    /// acknowledgement promises that).
    pub(super) fn route_publish(&mut self, p: Publish, topic: Arc<str>, now: Instant) -> Result<(), Close> {
        if !self.broker.netsplit_allows(NetsplitAction::Publish) {
            return self.refuse_publish_during_netsplit(&p);
        }
        let msg = Arc::new(Msg {
            mountpoint: self.slot.key.mountpoint.clone(),
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: if self.version.is_v5() { ForwardedProperties::from_properties(&p.properties) } else { None },
            expires_at: p.properties.message_expiry_interval.map(|s| now + Duration::from_secs(u64::from(s))),
            publisher: Some(self.slot.key.client_id.clone()),
        });
        let outcome = self.broker.publish_batched(msg, &mut self.wakes);
        let code = if outcome.matched == 0 && outcome.forwarded == 0 && self.version.is_v5() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        };
        let packet_id = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => return Ok(()),
            (_, Some(id)) => id,
            _ => return Err(Close::error(ReasonCode::PROTOCOL_ERROR, "QoS > 0 PUBLISH without packet id")),
        };
        if p.qos == QoS::ExactlyOnce {
            self.inflight.incoming_qos2.insert(packet_id.0);
        }
        if outcome.durable.is_empty() {
            let ack = PubResp { packet_id, code, ..PubResp::default() };
            self.emit(if p.qos == QoS::ExactlyOnce { Packet::PubRec(ack) } else { Packet::PubAck(ack) });
        } else {
            // Acknowledged once the message is where the acknowledgement promises.
            self.request(Request::Durable(outcome.durable), Continuation::Acknowledge { packet_id, qos: p.qos, code });
        }
        Ok(())
    }

    /// QoS 1/2 publishes of the client whose acknowledgement it has not been sent yet: QoS 2
    /// ones until PUBREL, and for MQTT 5 QoS 1 ones whose PUBACK waits for the disk or
    /// another node (MQTT 3 has no Receive Maximum; its connection stops reading instead).
    fn incoming_unacknowledged(&self) -> usize {
        let qos1 = if self.version.is_v5() { self.deferred_qos1 } else { 0 };
        self.inflight.incoming_qos2.len() + qos1
    }

    /// Refuses a publish the server may check and found wrong (MQTT 5 3.3.2.3.2 for the
    /// payload format): a QoS 1/2 one with `code` in its PUBACK or PUBREC, which ends the
    /// exchange; a QoS 0 one, which has no acknowledgement, by closing the connection with it.
    fn refuse_publish(&mut self, p: &Publish, code: ReasonCode, cause: &str) -> Result<(), Close> {
        tracing::debug!(client_id = %self.slot.key.client_id, topic = %p.topic, code = code.0, "PUBLISH refused: {cause}");
        let Some(packet_id) = p.packet_id.filter(|_| p.qos != QoS::AtMostOnce) else {
            return Err(Close::error(code, cause));
        };
        let refusal = PubResp { packet_id, code, ..PubResp::default() };
        self.emit(match p.qos {
            QoS::ExactlyOnce => Packet::PubRec(refusal),
            _ => Packet::PubAck(refusal),
        });
        Ok(())
    }

    /// `allow_publish_during_netsplit = off` and a cluster member is unreachable: the publish is
    /// not routed, and a QoS 1/2 publish is not acknowledged. MQTT 5 publishers get the
    /// acknowledgement with an error code (the exchange ends there); MQTT 3 has no such code,
    /// so its publishers get nothing and resend after reconnecting.
    fn refuse_publish_during_netsplit(&mut self, p: &Publish) -> Result<(), Close> {
        self.broker.counters.netsplit_refused[1].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client_id = %self.slot.key.client_id, topic = %p.topic, "PUBLISH refused: cluster not ready (netsplit)");
        let Some(packet_id) = p.packet_id.filter(|_| self.version.is_v5()) else { return Ok(()) };
        let refusal = PubResp {
            packet_id,
            code: ReasonCode::UNSPECIFIED_ERROR,
            properties: Properties {
                reason_string: Some("cluster not ready: a node is unreachable (netsplit)".into()),
                ..Properties::default()
            },
        };
        self.emit(match p.qos {
            QoS::ExactlyOnce => Packet::PubRec(refusal),
            _ => Packet::PubAck(refusal),
        });
        Ok(())
    }

    /// Applies `max_message_rate`: counts publishes per one-second window; past the limit the
    /// connection task is asked to pause reading (VerneMQ throttles rather than disconnects).
    fn check_rate(&mut self, now: Instant) {
        if self.cfg.max_message_rate == 0 {
            return;
        }
        let (start, count) = &mut self.rate_window;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
    }

    /// How long the connection should stop reading to honour `max_message_rate`.
    pub fn throttle(&self, now: Instant) -> Option<Instant> {
        let (start, count) = self.rate_window;
        (self.cfg.max_message_rate > 0 && count >= self.cfg.max_message_rate)
            .then_some(start + Duration::from_secs(1))
            .filter(|until| *until > now)
    }

    /// The topic of an incoming PUBLISH, resolving a topic alias [MQTT-3.3.2-10..12].
    fn resolve_topic(&mut self, p: &Publish) -> Result<Arc<str>, Close> {
        let Some(alias) = p.properties.topic_alias else {
            return Ok(p.topic.clone());
        };
        if alias == 0 || alias > self.cfg.topic_alias_max_broker {
            return Err(Close::error(
                ReasonCode::TOPIC_ALIAS_INVALID,
                format!("topic alias {alias} outside 1..={} [MQTT-3.3.2-9]", self.cfg.topic_alias_max_broker),
            ));
        }
        if p.topic.is_empty() {
            self.aliases
                .as_ref()
                .and_then(|a| a.incoming.get(&alias))
                .cloned()
                .ok_or_else(|| Close::error(ReasonCode::PROTOCOL_ERROR, format!("unknown topic alias {alias}")))
        } else {
            let t = p.topic.clone();
            self.aliases.get_or_insert_default().incoming.insert(alias, t.clone());
            Ok(t)
        }
    }

    /// Builds and queues an outgoing PUBLISH; false when it exceeds the client's Maximum
    /// Packet Size and was not sent.
    pub(super) fn send_publish(&mut self, q: &Queued, packet_id: Option<u16>, dup: bool, now: Instant) -> bool {
        let d = &q.delivery;
        let msg = &d.msg;
        let mut properties = Properties::default();
        // Shared with the message: no copy of the topic per delivery.
        let mut topic = msg.topic.clone();
        if self.version.is_v5() {
            if let Some(fp) = &msg.properties {
                fp.apply_to(&mut properties);
            }
            properties.message_expiry_interval = msg.remaining_expiry(now);
            properties.subscription_identifiers.clone_from(&d.subscription_ids);
            if !dup {
                self.apply_outgoing_alias(&msg.topic, &mut topic, &mut properties);
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id: packet_id.map(PacketId),
            payload: msg.payload.clone(),
            properties,
        });
        if let Some(max) = self.limits.maximum_packet_size
            && mqtt::encoded_len(&packet, self.version) > max as usize
        {
            return false;
        }
        self.emit(packet);
        true
    }

    /// Uses a topic alias towards the client when both sides allow it: the first time a topic
    /// is sent it gets a free alias, later sends carry only the alias [MQTT-3.3.2-12].
    fn apply_outgoing_alias(&mut self, full: &Arc<str>, topic: &mut Arc<str>, props: &mut Properties) {
        let max = self.limits.topic_alias_maximum.min(self.cfg.topic_alias_max_client);
        if max == 0 {
            return;
        }
        let aliases = self.aliases.get_or_insert_default();
        let outgoing = &mut aliases.outgoing;
        if let Some(alias) = outgoing.get(full) {
            props.topic_alias = Some(*alias);
            *topic = aliases.empty_topic.clone();
            return;
        }
        let next = outgoing.len() as u16 + 1;
        if next <= max {
            outgoing.insert(full.clone(), next);
            props.topic_alias = Some(next);
        }
    }
}
