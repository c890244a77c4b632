//! The one owner of the process's stdout and stderr.
//!
//! Everything a run shows goes through a [`Console`]: compileall's lines (stdout, buffered as
//! Python buffers a pipe), compile errors and replayed compile warnings, `sync`'s progress bar,
//! summary and JSON, pycache's own warnings — from the printing thread and from background
//! threads alike — and the client's `tracing` log. Text for stderr suspends the progress bar, so
//! the bar is never garbled; each kind of pycache warning is said once per run.
//!
//! A closed stdout (`| head -1`) is not a panic: writes report [`is_closed_stdout`] errors, which
//! the caller turns into compileall's exit (see `main.rs`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// What kind of pycache warning a message is; each kind is printed once per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WarningKind {
    /// A local cache entry failed its checks and is compiled again.
    CorruptLocalEntry,
    /// The server sent an entry that failed its checks.
    CorruptRemoteEntry,
    /// The local cache could not be opened or written.
    LocalCache,
    /// A request to the server failed (unreachable, 5xx, malformed answer).
    Server,
    /// The server refused the token (401/403).
    ServerAuth,
    /// The server refused some uploaded entries.
    UploadRefused,
    /// The server refused some uploaded entries because the namespace holds other bytes for
    /// their keys.
    UploadConflict,
    /// The server sent an entry that is not usable (a body that is not one whole code object,
    /// or a failure): compiled locally instead.
    UnusableRemoteEntry,
    /// Trusted keys are set and the server sent entries none of them signed.
    UntrustedRemoteEntry,
    /// An entry was too large for the server and was not uploaded.
    EntryTooLarge,
    /// A source file changed while it was compiled; its result was not cached.
    SourceChanged,
    /// The token may not write: what the run compiled is not uploaded (a note, not a warning:
    /// pull-request builds are meant to run so).
    ReadOnlyToken,
}

impl WarningKind {
    /// Whether the warning concerns only the cache's health, not the build: in compileall mode
    /// stderr is compileall's, so such warnings go to the log only.
    fn cache_only(self) -> bool {
        matches!(
            self,
            WarningKind::CorruptLocalEntry
                | WarningKind::CorruptRemoteEntry
                | WarningKind::LocalCache
                | WarningKind::EntryTooLarge
                | WarningKind::SourceChanged
                | WarningKind::ReadOnlyToken
        )
    }
}

/// Where a run's text goes: the real process streams, or buffers (tests).
pub enum Streams {
    /// The process's stdout and stderr.
    Process,
    /// In-memory buffers, shared so a test can read them afterwards.
    Buffers {
        /// What would go to stdout.
        stdout: Arc<Mutex<Vec<u8>>>,
        /// What would go to stderr.
        stderr: Arc<Mutex<Vec<u8>>>,
    },
}

struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Inner {
    stdout: io::BufWriter<Box<dyn Write + Send>>,
    stderr: Box<dyn Write + Send>,
    /// Flush stdout after every line (a terminal is line-buffered in Python).
    line_buffered: bool,
    bar: Option<indicatif::ProgressBar>,
    said: HashSet<WarningKind>,
    /// compileall mode: stderr carries only what compileall itself prints.
    compileall: bool,
    /// Set once stdout was found closed; later stdout text is dropped.
    stdout_closed: bool,
}

/// The shared handle on stdout and stderr; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Console")
    }
}

/// The error a write to a closed stdout gives.
pub fn is_closed_stdout(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}

/// An [`anyhow::Error`] that is, somewhere in its chain, a closed stdout.
pub fn error_is_closed_stdout(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<io::Error>().is_some_and(is_closed_stdout))
}

impl Console {
    /// A console on `streams`. `compileall`: stderr is reserved for compileall's own text.
    pub fn new(streams: Streams, compileall: bool) -> Console {
        let (stdout, stderr, line_buffered): (Box<dyn Write + Send>, Box<dyn Write + Send>, bool) =
            match streams {
                Streams::Process => (
                    Box::new(io::stdout()),
                    Box::new(io::stderr()),
                    io::stdout().is_terminal(),
                ),
                Streams::Buffers { stdout, stderr } => (
                    Box::new(SharedBuffer(stdout)),
                    Box::new(SharedBuffer(stderr)),
                    false,
                ),
            };
        Console {
            inner: Arc::new(Mutex::new(Inner {
                // Python's buffer for a pipe is 8 KiB: the same size gives a closed pipe the same
                // moment to show.
                stdout: io::BufWriter::with_capacity(8192, stdout),
                stderr,
                line_buffered,
                bar: None,
                said: HashSet::new(),
                compileall,
                stdout_closed: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this console is in compileall mode.
    pub fn is_compileall(&self) -> bool {
        self.lock().compileall
    }

    /// Switches between compileall mode and the project commands' mode.
    pub fn set_compileall(&self, compileall: bool) {
        self.lock().compileall = compileall;
    }

    /// One line on stdout (`\n` added).
    pub fn stdout_line(&self, line: &str) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.stdout_closed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let result = (|| {
            inner.stdout.write_all(line.as_bytes())?;
            inner.stdout.write_all(b"\n")?;
            if inner.line_buffered {
                inner.stdout.flush()?;
            }
            Ok(())
        })();
        if let Err(e) = &result {
            if is_closed_stdout(e) {
                inner.stdout_closed = true;
            }
        }
        result
    }

    /// Flushes stdout.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.stdout_closed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let result = inner.stdout.flush();
        if let Err(e) = &result {
            if is_closed_stdout(e) {
                inner.stdout_closed = true;
            }
        }
        result
    }

    /// Text for stderr, verbatim. stdout is flushed first when it is a terminal (Python's
    /// line-buffered stdout shows earlier lines before a later stderr write), and the bar is
    /// suspended while it is written.
    pub fn stderr_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.line_buffered && !inner.stdout_closed {
            let _ = inner.stdout.flush();
        }
        let inner = &mut *inner;
        let stderr = &mut inner.stderr;
        // A closed stderr has nowhere left to complain to.
        match &inner.bar {
            Some(bar) => bar.suspend(|| {
                let _ = stderr.write_all(text.as_bytes());
                let _ = stderr.flush();
            }),
            None => {
                let _ = stderr.write_all(text.as_bytes());
                let _ = stderr.flush();
            }
        }
    }

    /// A pycache warning of `kind`: printed the first time the kind occurs in this run (in
    /// compileall mode only when it concerns the build, not just the cache), always logged.
    pub fn warn(&self, kind: WarningKind, message: &str) {
        tracing::warn!(?kind, "{message}");
        let show = {
            let mut inner = self.lock();
            let first = inner.said.insert(kind);
            first && !(inner.compileall && kind.cache_only())
        };
        if show {
            let prefix = match kind {
                WarningKind::ServerAuth => "pycache: WARNING: ",
                WarningKind::ReadOnlyToken => "pycache: note: ",
                _ => "pycache: warning: ",
            };
            self.stderr_text(&format!("{prefix}{message}\n"));
        }
    }

    /// Starts a progress bar on stderr for `total` files.
    pub fn start_progress(&self, total: u64) {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.lock().bar = Some(bar);
    }

    /// Advances the progress bar by one file.
    pub fn tick(&self) {
        if let Some(bar) = &self.lock().bar {
            bar.inc(1);
        }
    }

    /// Shows `message` after the progress bar's count (empty: nothing).
    pub fn progress_message(&self, message: &str) {
        if let Some(bar) = &self.lock().bar {
            bar.set_message(message.to_owned());
        }
    }

    /// Removes the progress bar.
    pub fn finish_progress(&self) {
        if let Some(bar) = self.lock().bar.take() {
            bar.finish_and_clear();
        }
    }

    /// A writer for the `tracing` subscriber: log lines go to stderr through the console, so
    /// they suspend the bar like everything else.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            console: self.clone(),
            line: Vec::new(),
        }
    }
}

/// One log event's text, written to stderr through the [`Console`] when dropped.
pub struct LogWriter {
    console: Console,
    line: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        self.console.stderr_text(&text);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Console {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.log_writer()
    }
}

/// Text that came from a cache or a network, made safe for a terminal: every C0 control
/// character except `\n` and `\t` (ESC, `\r`, BEL, ...), DEL and every C1 control (U+0080 to
/// U+009F) becomes a visible escape (`\x1b`, `\x7f`, `\x9b`), so stored text cannot move the
/// cursor, recolour or retitle the terminal, or hide what precedes it. Text from a compile of
/// this run is shown verbatim instead (compileall parity); this is for replayed text only.
pub fn escape_replayed(text: &str) -> Cow<'_, str> {
    let is_control = |c: char| {
        (c.is_ascii_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
    };
    if !text.contains(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_control(c) {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `2.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Buffer = Arc<Mutex<Vec<u8>>>;

    fn buffers() -> (Console, Buffer, Buffer) {
        let (out, err) = (Arc::default(), Arc::default());
        let console = Console::new(
            Streams::Buffers {
                stdout: Arc::clone(&out),
                stderr: Arc::clone(&err),
            },
            false,
        );
        (console, out, err)
    }

    fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(b.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn each_warning_kind_is_said_once() {
        let (console, _, err) = buffers();
        for n in 0..3 {
            console.warn(WarningKind::Server, &format!("server down {n}"));
        }
        console.warn(WarningKind::CorruptLocalEntry, "bad entry");
        assert_eq!(
            text(&err),
            "pycache: warning: server down 0\npycache: warning: bad entry\n"
        );
    }

    #[test]
    fn compileall_mode_keeps_cache_warnings_off_stderr() {
        let (console, _, err) = buffers();
        console.set_compileall(true);
        console.warn(WarningKind::CorruptLocalEntry, "bad entry");
        console.warn(WarningKind::Server, "server down");
        assert_eq!(text(&err), "pycache: warning: server down\n");
    }

    #[test]
    fn replayed_text_has_its_control_characters_escaped() {
        assert_eq!(
            escape_replayed("a.py:1: SyntaxWarning: x\n\tok"),
            "a.py:1: SyntaxWarning: x\n\tok"
        );
        assert_eq!(
            escape_replayed("\x1b[31mred\r\x07\x00\x7f\u{9b}2J é ✓\n"),
            "\\x1b[31mred\\x0d\\x07\\x00\\x7f\\x9b2J é ✓\n"
        );
        assert!(matches!(escape_replayed("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn stdout_is_buffered_until_flushed() {
        let (console, out, _) = buffers();
        console.stdout_line("Listing 'a'...").unwrap();
        assert_eq!(text(&out), "");
        console.flush().unwrap();
        assert_eq!(text(&out), "Listing 'a'...\n");
    }
}
