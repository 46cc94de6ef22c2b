//! The `vmq_passwd` and `vmq_acl` plugins: CONNECT checked against the password file,
//! publishes and subscriptions against the ACL file, both read again every reload interval.
//!
//! Both answer at once from memory ([`Authorizer::authorize_publish_now`]), so a publish waits
//! for nothing and allocates nothing for its verdict. Verdicts follow VerneMQ's hook chain with
//! these two plugins alone:
//! - CONNECT (asked only when anonymous access is off): a known user with the right password
//!   is let in; a wrong password is refused as bad credentials (MQTT 3.1.1 return code 4, MQTT 5
//!   0x86); a client without user name or password, or one the file does not know, finds no
//!   plugin that accepts it: 5 (not authorized) for MQTT 3.1.1, 0x86 for MQTT 5.
//! - PUBLISH and SUBSCRIBE: allowed when the ACL allows them; with `plugins.vmq_acl = off` no
//!   plugin allows anything, so everything is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tracing::{info, warn};
use vmq_auth::acl::{Access, Acl, Who};
use vmq_auth::passwd::{Check, PasswordFile};
use vmq_config::AuthFilesConfig;
use vmq_mqtt::{QoS, ReasonCode};

use crate::authorize::{
    Answer, Authorization, Authorizer, PublishIntent, RegisterIntent, Subject, SubjectRef, SubscribeIntent,
};

/// What VerneMQ's packages install as `vmq.acl`: everyone may do everything.
const SHIPPED_ACL: &str = "topic #\n";

/// The two plugins as one [`Authorizer`]; `None` parts are switched off.
#[derive(Debug)]
pub struct FileAuth {
    passwd: Option<Loaded<PasswordFile>>,
    acl: Option<Loaded<Acl>>,
}

impl FileAuth {
    /// Loads the files of the plugins `cfg` switches on and starts their reloading (on the
    /// current runtime; the reloads end with the returned value). `None` when both are off.
    pub fn start(cfg: &AuthFilesConfig) -> Option<Arc<FileAuth>> {
        if !cfg.passwd && !cfg.acl {
            return None;
        }
        let passwd = cfg.passwd.then(|| Loaded::new("vmq_passwd", &cfg.password_file, read_passwd));
        let acl = cfg.acl.then(|| Loaded::new("vmq_acl", &cfg.acl_file, read_acl));
        let auth = Arc::new(FileAuth { passwd, acl });
        if let Some(every) = cfg.password_reload_interval.filter(|_| cfg.passwd) {
            spawn_reload(Arc::downgrade(&auth), every, |a| a.passwd.as_ref(), read_passwd);
        }
        if let Some(every) = cfg.acl_reload_interval.filter(|_| cfg.acl) {
            spawn_reload(Arc::downgrade(&auth), every, |a| a.acl.as_ref(), read_acl);
        }
        Some(auth)
    }

    fn register(&self, register: &RegisterIntent) -> Authorization {
        // No plugin accepting the client is answered as VerneMQ answers `no_matching_hook_found`.
        let unknown = if register.version.is_v5() {
            Authorization::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        } else {
            Authorization::NOT_AUTHORIZED
        };
        let (Some(passwd), Some(user), Some(password)) = (&self.passwd, &register.username, &register.password) else {
            return unknown;
        };
        match passwd.current().check(user, password) {
            Check::Ok => Authorization::Allow,
            Check::WrongPassword => Authorization::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            Check::UnknownUser => unknown,
        }
    }

    fn allows(&self, who: &SubjectRef<'_>, access: Access, topic: &str) -> Authorization {
        let Some(acl) = &self.acl else { return Authorization::NOT_AUTHORIZED };
        let who = Who { mountpoint: who.mountpoint, client_id: who.client_id, username: who.username };
        if acl.with_snapshot(|acl| acl.allows(&who, access, topic)) {
            Authorization::Allow
        } else {
            Authorization::NOT_AUTHORIZED
        }
    }
}

thread_local! {
    /// This thread's copy of the ACL in force and its version: a publish reads one atomic that
    /// changes only on a reload, instead of taking a lock or a reference count that every
    /// connection on every core shares (the cache line would bounce between the cores).
    static ACL_SNAPSHOT: std::cell::RefCell<Option<(u64, Arc<Acl>)>> = const { std::cell::RefCell::new(None) };
}

impl Loaded<Acl> {
    fn with_snapshot<R>(&self, f: impl FnOnce(&Acl) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        ACL_SNAPSHOT.with(|cell| {
            let mut cached = cell.borrow_mut();
            let (seen, acl) = cached.get_or_insert_with(|| (version, self.current()));
            if *seen != version {
                (*seen, *acl) = (version, self.current());
            }
            f(acl)
        })
    }
}

impl Authorizer for FileAuth {
    fn authorize_register(&self, _: &Subject, register: &RegisterIntent) -> Answer<Authorization> {
        Box::pin(std::future::ready(self.register(register)))
    }

    fn authorize_publish(&self, who: &Subject, publish: &PublishIntent) -> Answer<Authorization> {
        Box::pin(std::future::ready(self.allows(&who.borrowed(), Access::Write, &publish.topic)))
    }

    fn authorize_subscribe(&self, who: &Subject, filters: &[SubscribeIntent]) -> Answer<Vec<Authorization>> {
        let who = who.borrowed();
        let verdicts = filters.iter().map(|f| self.allows(&who, Access::Read, &f.filter)).collect();
        Box::pin(std::future::ready(verdicts))
    }

    fn authorize_publish_now(&self, who: &SubjectRef<'_>, topic: &str, _: QoS, _: bool) -> Option<Authorization> {
        Some(self.allows(who, Access::Write, topic))
    }

    fn authorize_subscribe_now(&self, who: &SubjectRef<'_>, filters: &[SubscribeIntent]) -> Option<Vec<Authorization>> {
        Some(filters.iter().map(|f| self.allows(who, Access::Read, &f.filter)).collect())
    }
}

/// A file's contents in force, and what went wrong with it last (logged when it changes, not
/// at every reload).
#[derive(Debug)]
struct Loaded<T> {
    plugin: &'static str,
    path: PathBuf,
    current: RwLock<Arc<T>>,
    /// Changes with every new `current`; unique across all files, so a thread's snapshot of
    /// one file can never pass for another's.
    version: AtomicU64,
    problem: RwLock<Option<String>>,
}

/// Where every [`Loaded::version`] comes from.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

/// Reads a plugin's file.
type Read<T> = fn(&Path) -> Outcome<T>;

/// What reading a plugin's file gave.
#[derive(Debug)]
enum Outcome<T> {
    /// Its contents.
    Read(T),
    /// It does not exist: `T` stands in for it (what VerneMQ's packages install).
    Missing(T),
    /// It could not be read or parsed: the previous contents stay.
    Bad(String),
}

impl<T: Send + Sync + 'static> Loaded<T> {
    fn new(plugin: &'static str, path: &Path, read: Read<T>) -> Self
    where
        T: Default,
    {
        let loaded = Loaded {
            plugin,
            path: path.to_owned(),
            current: RwLock::new(Arc::new(T::default())),
            version: AtomicU64::new(VERSIONS.fetch_add(1, Ordering::Relaxed)),
            problem: RwLock::new(None),
        };
        loaded.reload(read);
        loaded
    }

    fn current(&self) -> Arc<T> {
        // A poisoned lock still holds a whole value: writers only swap an Arc.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload(&self, read: Read<T>) {
        let (contents, problem) = match read(&self.path) {
            Outcome::Read(t) => (Some(t), None),
            Outcome::Missing(t) => (Some(t), Some("not found; using the file VerneMQ ships".to_string())),
            Outcome::Bad(why) => (None, Some(format!("{why}; keeping the previous contents"))),
        };
        if let Some(t) = contents {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
            self.version.store(VERSIONS.fetch_add(1, Ordering::Relaxed), Ordering::Release);
        }
        let mut last = self.problem.write().unwrap_or_else(|e| e.into_inner());
        if *last != problem {
            match &problem {
                Some(why) => warn!(plugin = self.plugin, file = %self.path.display(), "{why}"),
                None => info!(plugin = self.plugin, file = %self.path.display(), "loaded"),
            }
            *last = problem;
        }
    }
}

/// Reads the file of the plugin `part` picks every `every`, until `auth` is gone.
fn spawn_reload<T: Send + Sync + 'static>(
    auth: Weak<FileAuth>,
    every: Duration,
    part: fn(&FileAuth) -> Option<&Loaded<T>>,
    read: Read<T>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(auth) = auth.upgrade() else { return };
            // Reading and parsing a file blocks: off the runtime's worker threads.
            let done = tokio::task::spawn_blocking(move || {
                if let Some(loaded) = part(&auth) {
                    loaded.reload(read);
                }
            });
            if done.await.is_err() {
                return;
            }
        }
    });
}

fn read_passwd(path: &Path) -> Outcome<PasswordFile> {
    match PasswordFile::load(path) {
        Ok(file) => Outcome::Read(file),
        Err(_) if !path.exists() => Outcome::Missing(PasswordFile::default()),
        Err(e) => Outcome::Bad(e.to_string()),
    }
}

fn read_acl(path: &Path) -> Outcome<Acl> {
    match Acl::load(path) {
        Ok(acl) => {
            for (line, why) in acl.warnings() {
                warn!(plugin = "vmq_acl", file = %path.display(), line, "{why}; line ignored");
            }
            Outcome::Read(acl)
        }
        Err(_) if !path.exists() => Outcome::Missing(Acl::parse(SHIPPED_ACL).unwrap_or_default()),
        Err(e) => Outcome::Bad(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use vmq_mqtt::ProtocolVersion;

    use super::*;

    fn intent(version: ProtocolVersion, user: Option<&str>, password: Option<&str>) -> RegisterIntent {
        RegisterIntent {
            username: user.map(str::to_owned),
            password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
            clean_start: true,
            version,
        }
    }

    fn files(passwd: &str, acl: &str) -> (tempfile::TempDir, AuthFilesConfig) {
        let dir = tempfile::tempdir().expect("temp dir");
        let password_file = dir.path().join("vmq.passwd");
        let acl_file = dir.path().join("vmq.acl");
        std::fs::write(&password_file, passwd).expect("write");
        std::fs::write(&acl_file, acl).expect("write");
        let cfg = AuthFilesConfig {
            password_file,
            acl_file,
            password_reload_interval: None,
            acl_reload_interval: None,
            ..AuthFilesConfig::default()
        };
        (dir, cfg)
    }

    #[tokio::test]
    async fn connect_verdicts_follow_vernemqs_codes_per_protocol_version() {
        let line = vmq_auth::passwd::hash_entry("john", b"secret").expect("a valid user");
        let (_dir, cfg) = files(&format!("{line}\n"), "topic #\n");
        let auth = FileAuth::start(&cfg).expect("plugins on");
        let v4 = ProtocolVersion::V4;
        let v5 = ProtocolVersion::V5;
        assert_eq!(auth.register(&intent(v4, Some("john"), Some("secret"))), Authorization::Allow);
        let bad = Authorization::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        assert_eq!(auth.register(&intent(v4, Some("john"), Some("wrong"))), bad);
        assert_eq!(auth.register(&intent(v5, Some("john"), Some("wrong"))), bad);
        assert_eq!(auth.register(&intent(v4, Some("mary"), Some("secret"))), Authorization::NOT_AUTHORIZED);
        assert_eq!(auth.register(&intent(v4, None, None)), Authorization::NOT_AUTHORIZED);
        assert_eq!(auth.register(&intent(v5, Some("mary"), Some("secret"))), bad);
        assert_eq!(auth.register(&intent(v5, Some("john"), None)), bad);
    }

    #[tokio::test]
    async fn a_missing_acl_file_reads_as_the_shipped_one_and_a_bad_one_keeps_the_previous() {
        let (dir, mut cfg) = files("", "topic read a/#\n");
        let who = SubjectRef { mountpoint: "", client_id: "c", username: None };
        let auth = FileAuth::start(&cfg).expect("plugins on");
        assert_eq!(auth.allows(&who, Access::Read, "a/b"), Authorization::Allow);
        assert_eq!(auth.allows(&who, Access::Write, "a/b"), Authorization::NOT_AUTHORIZED);

        let acl = auth.acl.as_ref().expect("acl on");
        std::fs::write(&cfg.acl_file, "topic write b\nthis is not an acl line\n").expect("write");
        acl.reload(read_acl);
        assert_eq!(auth.allows(&who, Access::Read, "a/b"), Authorization::Allow, "the previous ACL stays");
        assert_eq!(auth.allows(&who, Access::Write, "b"), Authorization::NOT_AUTHORIZED);
        std::fs::write(&cfg.acl_file, "topic write b\n").expect("write");
        acl.reload(read_acl);
        assert_eq!(auth.allows(&who, Access::Write, "b"), Authorization::Allow, "a good file replaces it");

        cfg.acl_file = dir.path().join("absent.acl");
        let auth = FileAuth::start(&cfg).expect("plugins on");
        assert_eq!(auth.allows(&who, Access::Write, "any/topic"), Authorization::Allow);
    }

    #[tokio::test]
    async fn with_the_acl_off_nothing_is_allowed() {
        let (_dir, mut cfg) = files("", "topic #\n");
        cfg.acl = false;
        let auth = FileAuth::start(&cfg).expect("passwd on");
        let who = SubjectRef { mountpoint: "", client_id: "c", username: None };
        assert_eq!(auth.allows(&who, Access::Write, "t"), Authorization::NOT_AUTHORIZED);
        cfg.passwd = false;
        assert!(FileAuth::start(&cfg).is_none());
    }
}
