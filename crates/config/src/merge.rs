//! Parsing of the YAML files, their deep merge, and which file last set each key path.

use std::collections::HashMap;
use std::fmt;

use serde_norway::{Mapping, Value};

use crate::ConfigError;

/// One step of a key path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A key path such as `sites[2].shard`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// The path of a top-level key.
    pub(crate) fn key(k: &str) -> KeyPath {
        KeyPath(vec![Seg::Key(k.to_owned())])
    }

    /// This path followed by the mapping key `k`.
    pub(crate) fn at(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    /// This path followed by the sequence index `i`.
    pub(crate) fn idx(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Converts the path of a deserialization error.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> KeyPath {
        use serde_path_to_error::Segment;
        KeyPath(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The merged document and, for every key path set by some file, the index of the last file that set it.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// The merged document (always a mapping).
    pub(crate) value: Mapping,
    /// Last file (index into `names`) that set each path.
    origin: HashMap<KeyPath, usize>,
    /// The name of every file, in merge order.
    pub(crate) names: Vec<String>,
}

impl Merged {
    /// Parses `text` (named `name` in errors) and merges it over what is there.
    pub(crate) fn add(&mut self, name: &str, text: &str) -> Result<(), ConfigError> {
        let mut doc: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
            file: name.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        doc.apply_merge().map_err(|e| ConfigError::Syntax {
            file: name.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        let map = match doc {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => {
                return Err(ConfigError::Syntax {
                    file: name.to_owned(),
                    message: format!(
                        "expected a mapping of keys at the top level, found {}",
                        kind(&other)
                    ),
                });
            }
        };
        let file = self.names.len();
        self.names.push(name.to_owned());
        let mut path = KeyPath::default();
        merge_into(&mut self.value, map, &mut path, file, &mut self.origin);
        Ok(())
    }

    /// The file that last set `path` or the nearest enclosing path that some file set;
    /// `None` when no file set any of them (the value is a default).
    pub(crate) fn origin(&self, path: &KeyPath) -> Option<&str> {
        let mut p = path.0.as_slice();
        loop {
            if let Some(&f) = self.origin.get(&KeyPath(p.to_vec())) {
                return Some(&self.names[f]);
            }
            match p.split_last() {
                Some((_, rest)) if !rest.is_empty() => p = rest,
                _ => return None,
            }
        }
    }

    /// The name to put in an error about `path`: the file that set it, else every file.
    pub(crate) fn blame(&self, path: &KeyPath) -> String {
        match self.origin(path) {
            Some(f) => f.to_owned(),
            None if self.names.is_empty() => "(no file)".to_owned(),
            None => self.names.join(" + "),
        }
    }
}

/// Merges `src` over `dst`: mappings merge key by key, anything else (sequences included)
/// replaces what was there, and a null value removes the key (back to its default).
fn merge_into(
    dst: &mut Mapping,
    src: Mapping,
    path: &mut KeyPath,
    file: usize,
    origin: &mut HashMap<KeyPath, usize>,
) {
    for (k, v) in src {
        path.0.push(Seg::Key(key_string(&k)));
        match (dst.get_mut(&k), v) {
            (_, Value::Null) => {
                dst.remove(&k);
                forget(origin, path);
                origin.insert(path.clone(), file);
            }
            (Some(Value::Mapping(d)), Value::Mapping(s)) => {
                origin.insert(path.clone(), file);
                merge_into(d, s, path, file, origin);
            }
            (_, v) => {
                forget(origin, path);
                record(origin, path, &v, file);
                dst.insert(k, v);
            }
        }
        path.0.pop();
    }
}

/// Removes the origin of `path` and of every path below it.
fn forget(origin: &mut HashMap<KeyPath, usize>, path: &KeyPath) {
    origin.retain(|p, _| !p.0.starts_with(&path.0));
}

/// Records `file` as the origin of `path` and of every path inside `v`.
fn record(origin: &mut HashMap<KeyPath, usize>, path: &mut KeyPath, v: &Value, file: usize) {
    origin.insert(path.clone(), file);
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                path.0.push(Seg::Key(key_string(k)));
                record(origin, path, v, file);
                path.0.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                path.0.push(Seg::Index(i));
                record(origin, path, v, file);
                path.0.pop();
            }
        }
        _ => {}
    }
}

/// A mapping key as the text used in key paths.
fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "~".to_owned(),
        other => kind(other).to_owned(),
    }
}

/// The YAML kind of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Joins the lines of a message so that an error stays one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
