//! The log half of telemetry: where log lines go and what they look like.
//!
//! Every command logs to standard error, filtered by RUST_LOG (default: samocode at info, or
//! warnings only for commands whose output is the point). The daemon also writes its lines to
//! `samocode.log` in its state directory, rotated by size (see [`super::rotating`]): five files
//! of at most 10 MB, so that its history survives a terminal or a journal that is not kept.
//! `--log-format json` (or `SAMOCODE_LOG_FORMAT=json`) writes one JSON object a line to both.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use super::rotating::RotatingFile;

/// The daemon's log file, in its state directory.
pub const LOG_FILE: &str = "samocode.log";
/// Where the log file rotates.
pub const LOG_FILE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the current one (`samocode.log.1` to `.4`): five in all.
pub const LOG_FILES_KEPT: usize = 4;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, `fields` (with `message`
    /// and the event's own fields), and the spans it happened in; for log collectors.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// What one command's logs need besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct Logging {
    /// Only warnings by default, for commands whose own output is the point.
    pub quiet: bool,
    /// Also write the lines to this rotating file (the daemon's).
    pub file: Option<PathBuf>,
}

/// A boxed layer, so that text and JSON, standard error and file fit in one list.
type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The log layers: standard error, and the rotating file when one is asked for.
pub fn layers<S>(filter: Option<&str>, format: LogFormat, logging: &Logging) -> Vec<BoxedLayer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    layers_coloured(
        filter,
        format,
        logging,
        std::io::stderr().is_terminal(),
        std::io::stderr,
    )
}

/// [`layers`], standard error in colour or not, written by `stderr`.
fn layers_coloured<S, E>(
    filter: Option<&str>,
    format: LogFormat,
    logging: &Logging,
    colour: bool,
    stderr: E,
) -> Vec<BoxedLayer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    E: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let default = if logging.quiet {
        "warn"
    } else {
        "samocode=info,warn"
    };
    // A bad RUST_LOG falls back to the default rather than silencing everything.
    let filter = || {
        filter
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new(default))
    };
    let mut layers = vec![layer(Visible(stderr, colour), format, colour, filter())];
    if let Some(path) = &logging.file {
        match open(path) {
            Ok(file) => layers.push(file_layer(Visible(file, false), format, filter())),
            // The daemon still runs, and says so where it can; a state directory it cannot
            // write is refused a moment later with its own error.
            Err(error) => crate::cli::output::error_line(format_args!(
                "samocode: cannot write the log file {}: {error}; logging to standard error only",
                path.display()
            )),
        }
    }
    layers
}

fn open(path: &Path) -> std::io::Result<Mutex<RotatingFile>> {
    RotatingFile::open(path, LOG_FILE_MAX_BYTES, LOG_FILES_KEPT).map(Mutex::new)
}

fn layer<S, W>(writer: W, format: LogFormat, ansi: bool, filter: EnvFilter) -> BoxedLayer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => fmt
            .with_target(false)
            .with_ansi(ansi)
            .compact()
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    }
}

/// The file's layer: never in colour. Its span fields are formatted by a formatter of its
/// own type: a span's fields are formatted once per formatter type and kept with the span, so
/// with the terminal's they would come with the terminal's colour codes.
fn file_layer<S, W>(writer: W, format: LogFormat, filter: EnvFilter) -> BoxedLayer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .fmt_fields(PlainFields::default());
    match format {
        LogFormat::Text => fmt
            .with_target(false)
            .with_ansi(false)
            .compact()
            .with_filter(filter)
            .boxed(),
        // JSON has no colour to share.
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    }
}

/// A log writer that shows the control characters of what a line quotes (a blocked reason, an
/// agent's error) instead of passing them to the terminal or the file: the formatter escapes
/// ESC in a message but not in a field's value, and a carriage return in neither. With
/// `colour`, the formatter's own colour codes are kept (`output::visible_bytes`).
struct Visible<M>(M, bool);

impl<'w, M: tracing_subscriber::fmt::MakeWriter<'w>> tracing_subscriber::fmt::MakeWriter<'w>
    for Visible<M>
{
    type Writer = VisibleWriter<M::Writer>;

    fn make_writer(&'w self) -> Self::Writer {
        VisibleWriter(self.0.make_writer(), self.1)
    }

    fn make_writer_for(&'w self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        VisibleWriter(self.0.make_writer_for(meta), self.1)
    }
}

struct VisibleWriter<W>(W, bool);

impl<W: Write> Write for VisibleWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The formatter writes a line in one call, so a code is never cut between two.
        self.0
            .write_all(&crate::cli::output::visible_bytes(bytes, self.1))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The default field format, as a type of its own (see [`file_layer`]).
#[derive(Default)]
struct PlainFields(tracing_subscriber::fmt::format::DefaultFields);

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The lines a subscriber with these layers writes to the log file for a few events.
    fn logged(format: LogFormat) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(LOG_FILE);
        let logging = Logging {
            quiet: false,
            file: Some(path.clone()),
        };
        let subscriber = tracing_subscriber::registry().with(layers(None, format, &logging));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("attempt", session = "alpha", attempt = 2);
            let _entered = span.enter();
            tracing::info!(outcome = "ok", cost_usd = 0.25, "attempt finished");
            tracing::debug!("not at the default level");
            tracing::warn!("a warning");
        });
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn json_lines_carry_level_message_fields_and_span() {
        let lines = logged(LogFormat::Json);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["fields"]["message"], "attempt finished");
        assert_eq!(first["fields"]["outcome"], "ok");
        assert_eq!(first["fields"]["cost_usd"], 0.25);
        assert_eq!(first["span"]["name"], "attempt");
        assert_eq!(first["span"]["session"], "alpha");
        assert!(first["timestamp"].is_string());
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["fields"]["message"], "a warning");
    }

    #[test]
    fn text_lines_are_plain_and_filtered() {
        let lines = logged(LogFormat::Text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("INFO")
                && lines[0].contains("attempt finished")
                && lines[0].contains("outcome=\"ok\"")
                && lines[0].contains("session=\"alpha\""),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains('\u{1b}'), "no colour codes in a file");
        assert!(lines[1].contains("WARN") && lines[1].contains("a warning"));
    }

    /// What `log` writes to standard error as a terminal in colour, and to the log file.
    fn logged_in_colour(log: impl FnOnce()) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(LOG_FILE);
        let logging = Logging {
            quiet: false,
            file: Some(path.clone()),
        };
        let terminal = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = terminal.clone();
        let stderr = move || Sink(sink.clone());
        let subscriber = tracing_subscriber::registry().with(layers_coloured(
            None,
            LogFormat::Text,
            &logging,
            true,
            stderr,
        ));
        tracing::subscriber::with_default(subscriber, log);
        let coloured = String::from_utf8(terminal.lock().unwrap().clone()).unwrap();
        (coloured, std::fs::read_to_string(&path).unwrap())
    }

    /// With standard error a terminal (in colour), the file's lines, span fields included,
    /// still carry no colour codes.
    #[test]
    fn the_file_has_no_colour_codes_when_the_terminal_has_them() {
        let (coloured, file) = logged_in_colour(|| {
            let span = tracing::info_span!("attempt", session = "alpha");
            let _entered = span.enter();
            tracing::info!(outcome = "ok", "attempt finished");
        });
        assert!(
            coloured.contains('\u{1b}'),
            "the terminal is in colour: {coloured}"
        );
        assert!(
            !coloured.contains("^["),
            "every colour code is kept: {coloured:?}"
        );
        assert!(file.contains("session=\"alpha\""), "{file}");
        assert!(!file.contains('\u{1b}'), "{file:?}");
    }

    /// A line quoting an agent (a blocked reason) shows its control characters, on the
    /// terminal in colour and in the file: the formatter escapes ESC itself, and a carriage
    /// return that would print "passed" over "FAILED" reaches neither raw.
    #[test]
    fn what_a_log_line_quotes_cannot_move_the_cursor() {
        let reason = "tests FAILED\u{1b}[2K\rtests passed\u{b}\u{e}";
        let (coloured, file) = logged_in_colour(|| {
            tracing::info!(%reason, "blocked: {reason}");
        });
        for shown in [&coloured, &file] {
            assert!(shown.contains("tests FAILED"), "{shown:?}");
            assert!(
                !shown.contains(['\r', '\u{b}', '\u{e}']) && !shown.contains("\u{1b}[2K"),
                "{shown:?}"
            );
            assert!(shown.contains("^M"), "{shown:?}");
        }
        assert!(coloured.contains('\u{1b}'), "still in colour: {coloured:?}");
    }

    struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(LogFormat::parse("json"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("JSON"), None);
    }
}
