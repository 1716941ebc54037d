//! Printing: human text on stdout (diagnostics on stderr), or one JSON document with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

/// Writes to stdout. A reader that went away (`gitvault ls … | head`) ends the program quietly
/// with status 0, as other Unix tools do, instead of the panic of `print!`.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        exit_if_broken_pipe(&e);
        eprintln!("error: writing to stdout: {e}");
    }
}

/// Ends the program with status 0 when `e` says stdout's reader has gone.
pub fn exit_if_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

/// An error and its causes in one line, each cause once.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            let _ = write!(text, ": {cause}");
        }
    }
    text
}

pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    pub fn new(json: bool, quiet: bool) -> Output {
        Output { json, quiet }
    }

    /// Prints `value` as JSON, or the text `human` builds.
    pub fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(text) => emit(&format!("{text}\n")),
                Err(e) => eprintln!("error: cannot encode the result as JSON: {e}"),
            }
        } else {
            emit(&human());
        }
    }

    pub fn error(&self, e: &anyhow::Error) {
        let text = error_text(e);
        eprintln!("error: {text}");
        if self.json {
            emit(&format!(
                "{}\n",
                serde_json::json!({ "ok": false, "error": text })
            ));
        }
    }

    /// A progress bar for `len` bytes, shown only on a terminal and never with --json/-q.
    pub fn bytes_bar(&self, len: u64) -> indicatif::ProgressBar {
        use std::io::IsTerminal;
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    }
}

impl Output {
    /// A progress bar counting repositories, shown only on a terminal and never with --json/-q.
    pub fn count_bar(&self, label: &str) -> indicatif::ProgressBar {
        use std::io::IsTerminal;
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} repositories, eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn stats_table(s: &gitvault::stats::Stats) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "logical bytes:     {}", bytes(s.logical_bytes));
    let _ = writeln!(
        t,
        "unique bytes:      {}  (dedup ratio {:.2})",
        bytes(s.unique_bytes),
        s.dedup_ratio
    );
    let _ = writeln!(
        t,
        "stored bytes:      {}  (compression ratio {:.2})",
        bytes(s.stored_bytes),
        s.compression_ratio
    );
    let _ = writeln!(t, "chunks:            {}", s.chunks);
    let _ = writeln!(t, "packs:             {}", s.packs);
    if s.pending_deletion_packs > 0 {
        let _ = writeln!(
            t,
            "pending deletion:  {} packs, {} (condemned; grace period or Object Lock)",
            s.pending_deletion_packs,
            bytes(s.pending_deletion_bytes)
        );
    }
    if let Some(lock) = &s.object_lock {
        let _ = writeln!(
            t,
            "Object Lock:       live packs locked until {} at the earliest{}",
            lock.earliest_live_until
                .as_deref()
                .unwrap_or("- (not read yet)"),
            if lock.live_packs_unchecked > 0 {
                format!(
                    " ({} copies not read yet: run prune or verify)",
                    lock.live_packs_unchecked
                )
            } else {
                String::new()
            }
        );
    }
    if s.local_garbage_files > 0 {
        let _ = writeln!(
            t,
            "local garbage:     {} files, {} in tmp/ (left by interrupted writes)",
            s.local_garbage_files,
            bytes(s.local_garbage_bytes)
        );
    }
    let _ = writeln!(
        t,
        "\n{:<12} {:>7} {:>11} {:>8} {:>9} {:>11}  url",
        "target", "packs", "bytes", "missing", "garbage", "garbage B"
    );
    for ts in &s.targets {
        let _ = writeln!(
            t,
            "{:<12} {:>7} {:>11} {:>8} {:>9} {:>11}  {}",
            ts.name,
            ts.packs,
            bytes(ts.pack_bytes),
            ts.missing_packs,
            ts.garbage_files,
            bytes(ts.garbage_bytes),
            ts.url
        );
        if let Some(e) = &ts.error {
            let _ = writeln!(t, "  error: {e}");
        }
    }
    if s.writer_active {
        let _ = writeln!(
            t,
            "\na writer is active: unreferenced packs may still be in flight"
        );
    }
    t
}

/// Progress of long operations on a terminal: one line per running job (repository) with its
/// phase and counts, under whatever other bars the command adds (`add`).
pub struct Bars {
    multi: indicatif::MultiProgress,
    jobs: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

/// The bars on the terminal now, if any: log lines are written above them, not into them.
static DRAWN: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

impl Drop for Bars {
    fn drop(&mut self) {
        if let Ok(mut drawn) = DRAWN.lock() {
            *drawn = None;
        }
    }
}

/// Where log lines go: stderr, one whole line at a time, with the bars (if drawn) lifted
/// while it is written so that a line never lands in the middle of one.
#[derive(Default)]
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write;
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        // Cloned out of the lock: drawing takes locks of its own.
        let drawn = DRAWN.lock().ok().and_then(|d| d.clone());
        match drawn {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
}

impl Bars {
    /// Drawn only on a terminal and never with --json/-q; otherwise every call does nothing.
    pub fn new(out: &Output) -> Bars {
        use std::io::IsTerminal;
        let multi = if out.json || out.quiet || !std::io::stderr().is_terminal() {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        } else {
            let multi = indicatif::MultiProgress::new();
            if let Ok(mut drawn) = DRAWN.lock() {
                *drawn = Some(multi.clone());
            }
            multi
        };
        Bars {
            multi,
            jobs: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn add(&self, bar: indicatif::ProgressBar) -> indicatif::ProgressBar {
        self.multi.add(bar)
    }

    /// Prints a line above the bars.
    pub fn println(&self, f: impl FnOnce()) {
        self.multi.suspend(f);
    }
}

impl gitvault::progress::Progress for Bars {
    fn phase(&self, job: &str, phase: &str, total: Option<u64>, unit: gitvault::progress::Unit) {
        use gitvault::progress::Unit;
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let bar = jobs
            .entry(job.to_string())
            .or_insert_with(|| self.multi.add(indicatif::ProgressBar::new(0)));
        let counts = match unit {
            Unit::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}",
            Unit::Objects => "{pos}/{len} objects {per_sec}",
            Unit::Packs => "{pos}/{len} packs",
        };
        let template = match (total, unit) {
            (Some(_), _) => format!("{{spinner}} {{prefix}} {{msg}} [{{bar:20}}] {counts}"),
            // Bytes without a known end (a target's uploads): how many so far, and how fast.
            (None, Unit::Bytes) => "{spinner} {prefix} {msg} {bytes} {bytes_per_sec}".to_string(),
            (None, _) => "{spinner} {prefix} {msg}…".to_string(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(super::repo::terminal_safe(job));
        bar.set_message(phase.to_string());
        bar.set_position(0);
        bar.set_length(total.unwrap_or(0));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }

    fn advance(&self, job: &str, n: u64) {
        if let Ok(jobs) = self.jobs.lock()
            && let Some(bar) = jobs.get(job)
        {
            bar.inc(n);
        }
    }

    fn done(&self, job: &str) {
        if let Ok(mut jobs) = self.jobs.lock()
            && let Some(bar) = jobs.remove(job)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}
