//! A global `tracing` subscriber for the transport tests: prints warnings and records them
//! per local node id. Every test uses its own node ids, so records do not mix across
//! parallel tests.

use std::collections::HashMap;
use std::sync::{Mutex, Once};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

static WARNS: Mutex<Option<HashMap<u64, Vec<String>>>> = Mutex::new(None);

struct Recorder;

#[derive(Default)]
struct Fields {
    local: Option<u64>,
    text: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "local" {
            self.local = Some(value);
        }
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text += &format!(" {}={:?}", field.name(), value);
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        eprintln!("{}{}", event.metadata().level(), f.text);
        if let Some(local) = f.local {
            let mut w = WARNS.lock().unwrap();
            w.get_or_insert_with(HashMap::new)
                .entry(local)
                .or_default()
                .push(f.text);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Installs the recording subscriber (once per test binary).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Recorder);
    });
}

/// Warnings (and errors) logged so far by node `local`.
pub fn warns(local: u64) -> Vec<String> {
    WARNS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|w| w.get(&local).cloned())
        .unwrap_or_default()
}

/// How many warnings (and errors) node `local` logged so far.
pub fn warn_count(local: u64) -> usize {
    warns(local).len()
}
