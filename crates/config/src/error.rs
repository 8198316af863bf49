//! The one error type of config loading: every message is one line naming the file and the key.

use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded; `Display` is one line naming the file (and key).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `load` was given no file.
    #[error("no config file given (pass at least one -f FILE)")]
    NoFiles,
    /// A config file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid YAML (the message carries the line and column), or not a mapping.
    #[error("{file}: {message}")]
    Syntax {
        /// The file's name.
        file: String,
        /// What is wrong and where.
        message: String,
    },
    /// A site name (e.g. `mako server --site NAME`) that the config does not have.
    #[error("{files}: no site is named {name:?} (sites: {known})")]
    UnknownSite {
        /// The name asked for.
        name: String,
        /// The config files, joined by ` + `.
        files: String,
        /// The names it has, comma-separated.
        known: String,
    },
    /// A key has a wrong type or value, is unknown, missing, or breaks a rule.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The last file that set the key (or, for a key no file set, every file joined by ` + `).
        file: String,
        /// The key path, e.g. `sites[2].shard`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The key path of an [`Invalid`](ConfigError::Invalid) error.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The file an error names, if it names one file or a `+`-joined list.
    pub fn file(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { file, .. } | ConfigError::Syntax { file, .. } => Some(file),
            _ => None,
        }
    }
}

/// Rewrites a serde message in the config's own words (keys, not fields; integers, not `u32`).
pub(crate) fn humanize(msg: &str) -> String {
    let msg = crate::merge::one_line(msg);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let expected = rest.split_once("`, ").map(|(_, e)| e).unwrap_or("");
        let expected = expected.replace('`', "");
        return if expected.is_empty() || expected == "there are no fields" {
            "unknown key (this mapping takes no keys)".to_owned()
        } else {
            format!("unknown key ({expected})")
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((name, expected)) = rest.split_once("`, ")
    {
        return format!("unknown value `{name}` ({})", expected.replace('`', ""));
    }
    if msg == "invalid IP address syntax" {
        return "expected an IP address such as 127.0.0.1 (host names are not resolved)".to_owned();
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return format!("missing required key `{name}`");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            return format!("expected {}, found {found}", expected_words(expected));
        }
    }
    msg
}

/// Plain words for serde's names of expected types.
fn expected_words(e: &str) -> String {
    match e {
        "u8" | "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "i32" | "i64" => "an integer".to_owned(),
        "a string" | "a boolean" | "a sequence" => e.to_owned(),
        "a borrowed string" => "a string".to_owned(),
        "path string" => "a path (string)".to_owned(),
        "IP address" => "an IP address such as 127.0.0.1".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other if other.starts_with("a map") => "a mapping".to_owned(),
        other => other.to_owned(),
    }
}
