//! Where a plugin decides what a client may do: the [`Authorizer`] seam (VerneMQ's
//! `auth_on_register`, `auth_on_publish` and `auth_on_subscribe`). The password file and the ACL
//! file implement it (`crate::file_auth`); webhooks and the plugin hooks of later issues will.
//!
//! The session stays sans-IO. A verdict the authorizer knows at once (an ACL in memory:
//! [`Authorizer::authorize_publish_now`]) is taken inline; otherwise the session asks its driver
//! with a [`crate::session::Request`] and waits for the verdict (see `session/verdict.rs`): the
//! connection driver calls the authorizer and may take as long as the answer takes, and the
//! client's later packets wait meanwhile. A node without an authorizer never asks, so its
//! connections do not pay for the seam. A CONNECT is asked about (only with anonymous access
//! off, as VerneMQ) before the client id is registered, while no session exists yet: the
//! connection awaits that answer itself, and the session's rules turn it into the CONNACK
//! ([`crate::session::connect`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use vmq_mqtt::{ProtocolVersion, QoS, ReasonCode};

/// An answer that may come later (a webhook's HTTP round trip, a database look-up).
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The mountpoint of the client's listener.
    pub mountpoint: Arc<str>,
    /// The client id.
    pub client_id: Arc<str>,
    /// The user name its CONNECT carried, if any (authenticated or not: with anonymous access
    /// allowed it was not checked, and the ACL still uses it, as VerneMQ's does).
    pub username: Option<Arc<str>>,
}

impl Subject {
    /// The same, borrowed.
    pub fn borrowed(&self) -> SubjectRef<'_> {
        SubjectRef { mountpoint: &self.mountpoint, client_id: &self.client_id, username: self.username.as_deref() }
    }
}

/// Who asks, borrowed from the session: for the verdicts given at once, which must not touch
/// reference counts that every connection shares (the empty mountpoint, the authorizer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRef<'a> {
    /// The mountpoint of the client's listener.
    pub mountpoint: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// The user name its CONNECT carried, if any.
    pub username: Option<&'a str>,
}

/// What a client wants to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishIntent {
    /// The topic name, aliases resolved.
    pub topic: Arc<str>,
    /// Its QoS.
    pub qos: QoS,
    /// Its RETAIN flag.
    pub retain: bool,
}

/// A topic filter a client wants to subscribe to, with the QoS it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeIntent {
    /// The filter as sent (possibly `$share/group/filter`).
    pub filter: String,
    /// The maximum QoS asked for.
    pub qos: QoS,
}

/// A client asking to connect, from its CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct RegisterIntent {
    /// The user name, if one was sent.
    pub username: Option<String>,
    /// The password, if one was sent.
    pub password: Option<Bytes>,
    /// Whether it asked for a clean start.
    pub clean_start: bool,
    /// Its protocol version.
    pub version: ProtocolVersion,
}

impl fmt::Debug for RegisterIntent {
    // A password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterIntent")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("clean_start", &self.clean_start)
            .field("version", &self.version)
            .finish()
    }
}

/// A verdict on one CONNECT, one publish or one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// Go ahead.
    Allow,
    /// Refused, with the reason code the client is told where the protocol has one
    /// (MQTT 5; an MQTT 3.1.1 SUBACK says 0x80, a refused MQTT 3 publish is dropped).
    Deny(ReasonCode),
}

impl Authorization {
    /// Refused as not authorized (0x87).
    pub const NOT_AUTHORIZED: Authorization = Authorization::Deny(ReasonCode::NOT_AUTHORIZED);

    /// The reason code a refusal is answered with, `None` when allowed. A denial must read as
    /// one: a denial whose code is not an error code is told as not authorized (0x87).
    pub fn refusal_code(self) -> Option<ReasonCode> {
        match self {
            Authorization::Allow => None,
            Authorization::Deny(code) if code.is_error() => Some(code),
            Authorization::Deny(_) => Some(ReasonCode::NOT_AUTHORIZED),
        }
    }
}

/// Decides what clients may publish and subscribe to. Answers may come later; the session
/// keeps the client's packets in order meanwhile.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Whether `who` may connect (and be registered) as `register` says. Allowed unless an
    /// authorizer decides otherwise.
    fn authorize_register(&self, who: &Subject, register: &RegisterIntent) -> Answer<Authorization> {
        let _ = (who, register);
        Box::pin(std::future::ready(Authorization::Allow))
    }

    /// Whether `who` may publish `publish`.
    fn authorize_publish(&self, who: &Subject, publish: &PublishIntent) -> Answer<Authorization>;

    /// Whether `who` may subscribe to each of `filters`: one verdict per filter, in order (a
    /// filter without one is refused).
    fn authorize_subscribe(&self, who: &Subject, filters: &[SubscribeIntent]) -> Answer<Vec<Authorization>>;

    /// The verdict on publishing to `topic` when it is known at once (an ACL held in memory):
    /// the session then goes on without waiting, and the publish costs no allocation for its
    /// answer. It runs for every publish on the connection's task: no lock or reference count
    /// shared by all connections should be touched. `None`: ask
    /// [`Authorizer::authorize_publish`].
    fn authorize_publish_now(
        &self,
        who: &SubjectRef<'_>,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Option<Authorization> {
        let _ = (who, topic, qos, retain);
        None
    }

    /// The verdicts on `filters` when they are known at once; `None`: ask
    /// [`Authorizer::authorize_subscribe`].
    fn authorize_subscribe_now(&self, who: &SubjectRef<'_>, filters: &[SubscribeIntent]) -> Option<Vec<Authorization>> {
        let _ = (who, filters);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_reads_as_one_whatever_code_it_came_with() {
        assert_eq!(Authorization::Allow.refusal_code(), None);
        assert_eq!(Authorization::Deny(ReasonCode::QUOTA_EXCEEDED).refusal_code(), Some(ReasonCode::QUOTA_EXCEEDED));
        assert_eq!(Authorization::Deny(ReasonCode::SUCCESS).refusal_code(), Some(ReasonCode::NOT_AUTHORIZED));
    }
}
