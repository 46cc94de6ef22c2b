//! Errors that stop the node from starting, and warnings that do not.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded. The node must not start with any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read configuration file {}: {source}", path.display())]
    Io {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{file}:{line}: the file is not valid UTF-8 text")]
    Encoding {
        /// The file, as shown to the user.
        file: String,
        /// The line of the first invalid byte.
        line: usize,
    },
    /// A line that is not `key = value`.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file, as shown to the user.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An unknown key, or a value its key does not accept.
    #[error("{file}:{line}: {key}: {message}; accepted: {accepted}")]
    Invalid {
        /// The file, as shown to the user.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The key as written.
        key: String,
        /// What is wrong, e.g. "'abc' is not an integer" or "unknown key".
        message: String,
        /// What the key accepts (or, for an unknown key, where to look).
        accepted: String,
    },
}

impl ConfigError {
    /// The line the error is on, if it is about a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Encoding { line, .. }
            | ConfigError::Syntax { line, .. }
            | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// A key that was accepted but has no effect (a VerneMQ feature not implemented yet, a
/// deprecated key, a setting given twice, ...). The node starts and logs each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The line of the key, `None` for a warning about the configuration as a whole.
    pub line: Option<usize>,
    /// The key as written.
    pub key: String,
    /// The rest of the sentence after the key, e.g. "(TLS listeners) is not supported yet,
    /// ignored".
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "vernemq.conf:{line}: '{}' {}", self.key, self.message),
            None => write!(f, "vernemq.conf: '{}' {}", self.key, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_file_line_key_and_accepted() {
        let err = ConfigError::Invalid {
            file: "/etc/vernemq/vernemq.conf".into(),
            line: 12,
            key: "max_inflight_messages".into(),
            message: "'lots' is not an integer".into(),
            accepted: "an integer from 0 to 65535".into(),
        };
        assert_eq!(
            err.to_string(),
            "/etc/vernemq/vernemq.conf:12: max_inflight_messages: 'lots' is not an integer; \
             accepted: an integer from 0 to 65535"
        );
        assert_eq!(err.line(), Some(12));
    }

    #[test]
    fn io_error_names_the_path() {
        let err = ConfigError::Io {
            path: "/nope/vernemq.conf".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory"),
        };
        assert_eq!(err.to_string(), "cannot read configuration file /nope/vernemq.conf: No such file or directory");
        assert_eq!(err.line(), None);
    }

    #[test]
    fn warning_display_names_line_and_key() {
        let w = ConfigWarning {
            line: Some(12),
            key: "listener.ssl.default".into(),
            message: "(TLS listeners) is not supported yet, ignored".into(),
        };
        assert_eq!(
            w.to_string(),
            "vernemq.conf:12: 'listener.ssl.default' (TLS listeners) is not supported yet, ignored"
        );
    }
}
