//! The events sink: how an operation tells whoever runs it what is happening.

use std::sync::Arc;

use coffer_repo::archiver::Counters;
use coffer_runtime::{LogLevel, LogSink};

/// Receives an operation's log lines and its long-running phases. The CLI prints them (a
/// progress bar on a terminal); a daemon would append them to a job's log.
pub trait Events: Send + Sync {
    /// A log line; `source` is the app (for a plugin's lines) or `coffer`.
    fn log(&self, level: LogLevel, source: &str, message: &str);

    /// Long work begins (`backup`, `restore`); `counters` move while it runs, for progress.
    fn begin(&self, _phase: &'static str, _counters: Arc<Counters>) {}

    /// The long work begun last has ended (whether it succeeded or not).
    fn end(&self, _phase: &'static str) {}
}

/// Drops every event: for callers that only want the result.
pub struct NoEvents;

impl Events for NoEvents {
    fn log(&self, _: LogLevel, _: &str, _: &str) {}
}

/// A plugin's log lines into the sink, under the app's name.
pub(crate) fn plugin_log(events: &Arc<dyn Events>, app: &str) -> LogSink {
    let (events, app) = (events.clone(), app.to_string());
    Arc::new(move |level, message: &str| events.log(level, &app, message))
}

/// Ends a phase when dropped, so an early return or an error ends it too.
pub(crate) struct Phase<'a> {
    events: &'a dyn Events,
    name: &'static str,
}

impl<'a> Phase<'a> {
    pub(crate) fn begin(
        events: &'a dyn Events,
        name: &'static str,
        counters: Arc<Counters>,
    ) -> Phase<'a> {
        events.begin(name, counters);
        Phase { events, name }
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.events.end(self.name);
    }
}
