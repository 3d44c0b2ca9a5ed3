//! The global `config.toml` (`$XDG_CONFIG_HOME/samocode/config.toml`, else
//! `~/.config/samocode/config.toml`): every setting of the environment table under its lower
//! case name without `SAMOCODE_`, the two lists `strip_env` and `keep_env`, and the
//! `[profiles]` and `[prices]` tables. A key it does not know is an error naming the nearest known one.

use std::collections::HashMap;
use std::path::PathBuf;

use super::values::{SECRETS, SETTINGS, file_key, nearest};
use super::{ConfigError, Problems, Sources};
use crate::session::untrusted::{self, Links};

/// The most samocode reads of a configuration file.
pub(super) const CONFIG_LIMIT: u64 = 1 << 20;

/// Settings that are lists: in `config.toml` a TOML array of strings (or one string of
/// comma-separated entries), in the environment comma-separated.
pub(super) const LISTS: &[&str] = &["SAMOCODE_STRIP_ENV", "SAMOCODE_KEEP_ENV"];

/// What `config.toml` holds, sorted by kind.
#[derive(Debug, Default)]
pub(super) struct FileSettings {
    /// Scalar settings as text, by file key.
    pub scalars: HashMap<String, String>,
    /// List settings, by file key.
    pub lists: HashMap<String, Vec<String>>,
    /// The whole table, for `[profiles]`.
    pub table: toml::Table,
}

/// Reads `config.toml` (nothing there is no settings); what is wrong goes to `problems`.
pub(super) fn read(sources: &Sources, problems: &mut Problems) -> FileSettings {
    let Some(path) = path(sources) else {
        return FileSettings::default();
    };
    // A dotfile manager often makes config.toml a link: followed, but still never a pipe.
    let text = match untrusted::read_text(&path, CONFIG_LIMIT, Links::Follow) {
        Ok(Some(text)) => text,
        Ok(None) => return FileSettings::default(),
        Err(error) => {
            problems.push(error.into());
            return FileSettings::default();
        }
    };
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(error) => {
            let error: toml::de::Error = error;
            // Where it went wrong, as an editor counts: line and column from 1.
            let place = error.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" (line {line}, column {column})")
            });
            problems.push(ConfigError::BadToml {
                path,
                message: format!("{}{}", error.message(), place.unwrap_or_default()),
            });
            return FileSettings::default();
        }
    };
    let mut settings = FileSettings::default();
    let known: Vec<String> = SETTINGS.iter().map(|s| file_key(s)).collect();
    let lists: Vec<String> = LISTS.iter().map(|s| file_key(s)).collect();
    for (key, value) in &table {
        if key == "profiles" || key == "prices" {
            continue;
        }
        let secret = SECRETS.iter().any(|env| file_key(env) == *key);
        let bad = |expected| ConfigError::BadValue {
            key: key.clone(),
            value: match secret {
                true => "<hidden: it holds a secret>".to_string(),
                false => shown(value),
            },
            bare: !secret && !value.is_str(),
            origin: "config.toml",
            expected,
        };
        if lists.contains(key) {
            match list(value) {
                Some(entries) => {
                    settings.lists.insert(key.clone(), entries);
                }
                None => problems.push(bad("a list of variable names, such as [\"AWS_*\"]")),
            }
        } else if known.contains(key) {
            match scalar(value) {
                Some(text) => {
                    settings.scalars.insert(key.clone(), text);
                }
                None => problems.push(bad("a single string, number or boolean")),
            }
        } else if let Some(project) = super::project::KEYS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
        {
            problems.push(ConfigError::Misplaced {
                place: path.display().to_string(),
                key: key.clone(),
                belongs: format!(
                    "it is a project's: set {project}= in the project's .samocode file"
                ),
            });
        } else {
            let candidates = known.iter().chain(&lists).map(String::as_str);
            // The environment's name given whole (`samocode_max_retries`): its key is the rest.
            let bare = key.to_ascii_lowercase();
            let bare = bare.strip_prefix("samocode_").unwrap_or(key);
            problems.push(ConfigError::UnknownKey {
                place: path.display().to_string(),
                key: key.clone(),
                suggestion: nearest(bare, candidates.chain(["profiles", "prices"]))
                    .map(str::to_string),
            });
        }
    }
    settings.table = table;
    settings
}

/// The folder `config.toml` is read from.
pub(super) fn dir(sources: &Sources) -> Option<PathBuf> {
    path(sources)?.parent().map(std::path::Path::to_path_buf)
}

fn path(sources: &Sources) -> Option<PathBuf> {
    let dir = match sources.absolute_dir("XDG_CONFIG_HOME") {
        Some(dir) => dir,
        None => sources.home()?.join(".config"),
    };
    Some(dir.join("samocode").join("config.toml"))
}

fn scalar(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return None,
    })
}

fn list(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect(),
        toml::Value::String(text) => Some(split_list(text)),
        _ => None,
    }
}

/// The entries of a comma-separated list.
pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// A value of `config.toml` as an error shows it: a string as its text (the error quotes it),
/// anything else as TOML.
pub(super) fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
