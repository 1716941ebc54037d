//! What long operations tell whoever watches them (issue 18): each job (a repository, or the
//! command itself) goes through named phases, some with a known total, and advances. The
//! library only calls these; the CLI draws bars on a terminal and nothing elsewhere.

/// The unit a phase counts in, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Objects,
    Bytes,
    Packs,
}

/// Receives progress from worker threads (one job per thread at a time).
pub trait Progress: Sync {
    /// `job` starts `phase` (`fetch`, `walk`, `store`…), with `total` steps if known.
    fn phase(&self, job: &str, phase: &str, total: Option<u64>, unit: Unit);
    /// `job` did `n` more steps of its phase.
    fn advance(&self, job: &str, n: u64);
    /// `job` is over: its display can go.
    fn done(&self, job: &str);
}

/// No display: scripts, `--json`, `-q`, anything not a terminal.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: &str, _: Option<u64>, _: Unit) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str) {}
}

/// Tells `progress` that `name` is done when dropped, so that an operation's display goes
/// however it ends: with its result, with an error returned by `?`, or with a panic.
pub struct Job<'a> {
    progress: &'a dyn Progress,
    name: &'a str,
}

impl<'a> Job<'a> {
    pub fn new(progress: &'a dyn Progress, name: &'a str) -> Job<'a> {
        Job { progress, name }
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        self.progress.done(self.name);
    }
}
