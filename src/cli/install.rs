//! `samocode install [--copy]` and `samocode uninstall`: the skills and slash commands for
//! people who drive Claude Code or Codex by hand.
//!
//! Where: every skill goes to `~/.claude/skills/<name>/` and `$CODEX_HOME/skills/<name>/`
//! (`CODEX_HOME` defaults to `~/.codex`), every command to `~/.claude/commands/<name>.md`.
//!
//! How: when the source tree this binary was built from still has `skills/` and `commands/`
//! (a checkout), each item is a symlink into it, so edits to the checkout show at once.
//! Otherwise, or with `--copy`, each item is a copy of the text compiled into the binary (a
//! skill is a folder holding only its `SKILL.md`).
//!
//! Ownership: install and uninstall never overwrite or remove anything that is not ours. An item
//! is ours when it is a symlink pointing into our checkout, or a copy whose content equals our
//! text or still has the fingerprint recorded when we wrote it (an older version we installed,
//! unchanged since). Anything else at one of our paths is reported as "skipped: not ours" and
//! left alone. The record is a small manifest, `~/.claude/.samocode-install.json`:
//!
//! ```json
//! {"schema": 1, "copies": {"/home/me/.claude/commands/do.md": "fnv1a64:..."},
//!  "created_dirs": ["/home/me/.claude/commands"]}
//! ```
//!
//! `created_dirs` lists the folders install had to create; uninstall removes them again when they
//! are empty, and then the manifest itself, so that install followed by uninstall leaves the home
//! folder exactly as it was. The manifest is written only when it has something to say.
//! Every item gets one line of report: installed, updated, already installed, skipped: not ours,
//! removed, or not installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{CliError, exit};
use crate::config::Config;
use crate::workflow;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Copy the texts compiled into this binary instead of linking to the source checkout.
    #[arg(long)]
    pub copy: bool,
}

/// Why installing or uninstalling stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// There is no home folder to install into.
    #[error(
        "HOME is not set, or is not an absolute path: cannot find ~/.claude (set HOME to your home folder, as an absolute path; or CODEX_HOME for Codex)"
    )]
    NoHome,
    /// HOME names a folder that is not there: most likely a mistake, not a home to make.
    #[error("HOME={0} is not an existing folder; set HOME to your home folder")]
    HomeMissing(PathBuf),
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The manifest exists but is not ours to read.
    #[error("{path} is not a samocode install manifest ({detail}); move it away and retry")]
    BadManifest { path: PathBuf, detail: String },
}

/// Where things go and where links point.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `~/.claude`.
    pub claude: PathBuf,
    /// `$CODEX_HOME`.
    pub codex: PathBuf,
    /// The source checkout symlinks point into; ownership of a symlink is judged against it.
    pub checkout: PathBuf,
}

impl Layout {
    /// The layout of `config`, with the checkout this binary was built from.
    pub fn of(config: &Config) -> Result<Layout, InstallError> {
        let home = config.home.as_ref().ok_or(InstallError::NoHome)?;
        if !home.is_dir() {
            return Err(InstallError::HomeMissing(home.clone()));
        }
        Ok(Layout {
            claude: home.join(".claude"),
            codex: config.codex_home.clone().ok_or(InstallError::NoHome)?,
            checkout: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        })
    }

    fn manifest(&self) -> PathBuf {
        self.claude.join(".samocode-install.json")
    }

    /// The checkout still holds every text we would link to.
    fn checkout_complete(&self) -> bool {
        self.items().iter().all(|item| item.source.exists())
    }

    /// Every item we install, in a stable order.
    fn items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        for home in [&self.claude, &self.codex] {
            for (name, text) in workflow::SKILLS {
                items.push(Item {
                    path: home.join("skills").join(name),
                    source: self.checkout.join("skills").join(name),
                    text,
                    skill: true,
                });
            }
        }
        for (name, text) in workflow::COMMANDS {
            let file = format!("{name}.md");
            items.push(Item {
                path: self.claude.join("commands").join(&file),
                source: self.checkout.join("commands").join(&file),
                text,
                skill: false,
            });
        }
        items
    }
}

/// One installed thing: a skill folder or a command file.
struct Item {
    path: PathBuf,
    /// What a symlink points to.
    source: PathBuf,
    /// What a copy holds (a skill's SKILL.md).
    text: &'static str,
    skill: bool,
}

impl Item {
    /// The file whose content is our text when the item is a copy.
    fn text_file(&self) -> PathBuf {
        if self.skill {
            self.path.join("SKILL.md")
        } else {
            self.path.clone()
        }
    }
}

/// What is at an item's path now.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Absent,
    /// Our symlink; `current` when it points exactly where we would point it.
    Link {
        current: bool,
    },
    /// Our copy; `current` when it holds exactly our text.
    Copy {
        current: bool,
    },
    Foreign,
}

/// The install record (see the module header).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    schema: u32,
    #[serde(default)]
    copies: BTreeMap<PathBuf, String>,
    #[serde(default)]
    created_dirs: BTreeSet<PathBuf>,
}

impl Manifest {
    fn read(path: &Path) -> Result<Manifest, InstallError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| InstallError::BadManifest {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Manifest::default()),
            Err(source) => Err(io("read", path, source)),
        }
    }

    fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.created_dirs.is_empty()
    }
}

/// The `install` command.
pub fn install(args: &InstallArgs, config: &Config) -> Result<u8, CliError> {
    let layout = Layout::of(config).map_err(CliError::usage)?;
    // Each item's line as it is done: a failure half way leaves the lines of what was done.
    install_into(&layout, args.copy, &mut |line| println!("{line}")).map_err(|error| {
        CliError::failure(anyhow::anyhow!(
            "{error}; what is listed above is recorded, and `samocode uninstall` removes it"
        ))
    })?;
    Ok(exit::DONE)
}

/// The `uninstall` command.
pub fn uninstall(config: &Config) -> Result<u8, CliError> {
    let layout = Layout::of(config).map_err(CliError::usage)?;
    uninstall_from(&layout, &mut |line| println!("{line}")).map_err(CliError::failure)?;
    Ok(exit::DONE)
}

/// Installs every item as a link (when the checkout is complete and `copy` is false) or a copy;
/// tells `report` one line per item as it is done, and returns the lines.
pub fn install_into(
    layout: &Layout,
    copy: bool,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<String>, InstallError> {
    let link = !copy && layout.checkout_complete();
    let mut manifest = Manifest::read(&layout.manifest())?;
    let mut lines = Vec::new();
    let outcome = install_items(layout, link, &mut manifest, &mut |line| {
        report(&line);
        lines.push(line);
    });
    // Saved even when an item failed, so that what was made so far can be uninstalled.
    save(layout, &mut manifest)?;
    outcome.map(|()| lines)
}

fn install_items(
    layout: &Layout,
    link: bool,
    manifest: &mut Manifest,
    report: &mut dyn FnMut(String),
) -> Result<(), InstallError> {
    for item in layout.items() {
        let found = inspect(&item, layout, manifest)?;
        let how = if link {
            format!("-> {}", item.source.display())
        } else {
            "(copy)".to_string()
        };
        let verdict = match found {
            Found::Foreign => "skipped: not ours",
            Found::Link { current: true } if link => "already installed",
            Found::Copy { current: true } if !link => {
                // Recorded again in case the manifest was lost.
                manifest
                    .copies
                    .insert(item.text_file(), fingerprint(item.text));
                "already installed"
            }
            Found::Absent => {
                create(&item, link, manifest)?;
                "installed"
            }
            Found::Link { .. } | Found::Copy { .. } => {
                remove(&item, manifest)?;
                create(&item, link, manifest)?;
                "updated"
            }
        };
        report(format!("{verdict}: {} {how}", item.path.display()));
    }
    Ok(())
}

/// Writes the manifest, or removes it when it has nothing to record.
fn save(layout: &Layout, manifest: &mut Manifest) -> Result<(), InstallError> {
    if manifest.is_empty() {
        return remove_file_if_present(&layout.manifest());
    }
    manifest.schema = 1;
    ensure_dir(&layout.claude, manifest)?;
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    std::fs::write(layout.manifest(), text + "\n").map_err(|e| io("write", &layout.manifest(), e))
}

/// Removes every item that is ours, then the folders install created (when empty) and the
/// manifest; tells `report` one line per item as it is done, and returns the lines.
pub fn uninstall_from(
    layout: &Layout,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<String>, InstallError> {
    let mut manifest = Manifest::read(&layout.manifest())?;
    let mut lines = Vec::new();
    for item in layout.items() {
        let verdict = match inspect(&item, layout, &manifest) {
            Ok(Found::Absent) => "not installed",
            Ok(Found::Foreign) => "skipped: not ours",
            Ok(Found::Link { .. } | Found::Copy { .. }) => match remove(&item, &mut manifest) {
                Ok(()) => "removed",
                Err(error) => {
                    // Keep the record of what is still there, for the next uninstall.
                    save(layout, &mut manifest)?;
                    return Err(error);
                }
            },
            Err(error) => {
                save(layout, &mut manifest)?;
                return Err(error);
            }
        };
        let line = format!("{verdict}: {}", item.path.display());
        report(&line);
        lines.push(line);
    }
    remove_file_if_present(&layout.manifest())?;
    // Deepest first, so a parent is empty by the time its turn comes; a folder someone has put
    // something else into stays.
    let mut dirs: Vec<&PathBuf> = manifest.created_dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(lines)
}

/// Whether a link to `target` is an earlier install's of this item from another samocode
/// checkout (`cargo install --git` builds in a folder that changes with each version): it names
/// the same file within its checkout, and that checkout is samocode's (it has `workflow.md`),
/// or is gone.
fn earlier_checkouts(target: &Path, item: &Item, layout: &Layout) -> bool {
    let Ok(relative) = item.source.strip_prefix(&layout.checkout) else {
        return false;
    };
    if relative.as_os_str().is_empty() || !target.ends_with(relative) {
        return false;
    }
    let Some(root) = target.ancestors().nth(relative.components().count()) else {
        return false;
    };
    root.join("workflow.md").is_file() || std::fs::symlink_metadata(root).is_err()
}

fn inspect(item: &Item, layout: &Layout, manifest: &Manifest) -> Result<Found, InstallError> {
    let meta = match std::fs::symlink_metadata(&item.path) {
        Ok(meta) => meta,
        // Under a file where a folder would be, nothing of ours can be there either.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(Found::Absent);
        }
        Err(e) => return Err(io("inspect", &item.path, e)),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&item.path).map_err(|e| io("read", &item.path, e))?;
        let target = match item.path.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
        return Ok(if target.starts_with(&layout.checkout) {
            Found::Link {
                current: target == item.source,
            }
        } else if earlier_checkouts(&target, item, layout) {
            Found::Link { current: false }
        } else {
            Found::Foreign
        });
    }
    if item.skill != meta.is_dir() {
        return Ok(Found::Foreign);
    }
    if item.skill {
        // Our skill folder holds our SKILL.md and nothing else.
        let entries: Vec<_> = std::fs::read_dir(&item.path)
            .map_err(|e| io("read", &item.path, e))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        if entries != ["SKILL.md"] {
            return Ok(Found::Foreign);
        }
    }
    let file = item.text_file();
    let is_file = std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file());
    let content = match is_file.then(|| std::fs::read(&file)) {
        Some(Ok(content)) => content,
        Some(Err(e)) => return Err(io("read", &file, e)),
        None => return Ok(Found::Foreign),
    };
    if content == item.text.as_bytes() {
        return Ok(Found::Copy { current: true });
    }
    let recorded = manifest.copies.get(&file);
    Ok(if recorded == Some(&fingerprint_bytes(&content)) {
        Found::Copy { current: false }
    } else {
        Found::Foreign
    })
}

fn create(item: &Item, link: bool, manifest: &mut Manifest) -> Result<(), InstallError> {
    if let Some(parent) = item.path.parent() {
        ensure_dir(parent, manifest)?;
    }
    if link {
        return std::os::unix::fs::symlink(&item.source, &item.path)
            .map_err(|e| io("link", &item.path, e));
    }
    if item.skill {
        std::fs::create_dir(&item.path).map_err(|e| io("create", &item.path, e))?;
    }
    let file = item.text_file();
    std::fs::write(&file, item.text).map_err(|e| io("write", &file, e))?;
    manifest.copies.insert(file, fingerprint(item.text));
    Ok(())
}

/// Removes an item already judged ours.
fn remove(item: &Item, manifest: &mut Manifest) -> Result<(), InstallError> {
    let meta = std::fs::symlink_metadata(&item.path).map_err(|e| io("inspect", &item.path, e))?;
    let file = item.text_file();
    if meta.file_type().is_symlink() || !item.skill {
        std::fs::remove_file(&item.path).map_err(|e| io("remove", &item.path, e))?;
    } else {
        std::fs::remove_file(&file).map_err(|e| io("remove", &file, e))?;
        std::fs::remove_dir(&item.path).map_err(|e| io("remove", &item.path, e))?;
    }
    manifest.copies.remove(&file);
    Ok(())
}

/// Creates `dir` and its missing parents, recording each one created.
fn ensure_dir(dir: &Path, manifest: &mut Manifest) -> Result<(), InstallError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| std::fs::symlink_metadata(d).is_err())
        .collect();
    for d in missing.into_iter().rev() {
        std::fs::create_dir(d).map_err(|e| io("create", d, e))?;
        manifest.created_dirs.insert(d.to_path_buf());
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> Result<(), InstallError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io("remove", path, e)),
        _ => Ok(()),
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> InstallError {
    InstallError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn fingerprint(text: &str) -> String {
    fingerprint_bytes(text.as_bytes())
}

/// FNV-1a (64 bit): stable across Rust versions and machines, unlike the std hasher; enough to
/// recognise a file we wrote, which is all it is for.
fn fingerprint_bytes(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(home: &Path) -> Layout {
        Layout {
            claude: home.join(".claude"),
            codex: home.join(".codex"),
            checkout: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }

    fn count(lines: &[String], verdict: &str) -> usize {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{verdict}:")))
            .count()
    }

    #[test]
    fn links_then_copies_then_an_older_copy_is_updated_and_a_changed_one_kept() {
        let home = tempfile::tempdir().unwrap();
        let layout = layout(home.path());
        let all = workflow::SKILLS.len() * 2 + workflow::COMMANDS.len();

        let lines = install_into(&layout, false, &mut |_| {}).unwrap();
        assert_eq!(count(&lines, "installed"), all, "{lines:#?}");
        let plan = layout.claude.join("skills/planning");
        assert!(std::fs::symlink_metadata(&plan).unwrap().is_symlink());
        assert!(plan.join("SKILL.md").is_file());
        let again = install_into(&layout, false, &mut |_| {}).unwrap();
        assert_eq!(count(&again, "already installed"), all, "{again:#?}");

        // Switching to copies replaces our links.
        let lines = install_into(&layout, true, &mut |_| {}).unwrap();
        assert_eq!(count(&lines, "updated"), all, "{lines:#?}");
        assert!(!std::fs::symlink_metadata(&plan).unwrap().is_symlink());

        // An older copy we wrote (its fingerprint recorded) is ours; one a person edited is not.
        let older = layout.claude.join("commands/do.md");
        let edited = layout.codex.join("skills/testing/SKILL.md");
        let mut manifest = Manifest::read(&layout.manifest()).unwrap();
        manifest
            .copies
            .insert(older.clone(), fingerprint("an older text"));
        std::fs::write(layout.manifest(), serde_json::to_string(&manifest).unwrap()).unwrap();
        std::fs::write(&older, "an older text").unwrap();
        std::fs::write(&edited, "my own notes").unwrap();
        let lines = install_into(&layout, true, &mut |_| {}).unwrap();
        assert_eq!(count(&lines, "updated"), 1, "{lines:#?}");
        assert_eq!(count(&lines, "skipped: not ours"), 1, "{lines:#?}");
        assert_eq!(
            std::fs::read_to_string(&older).unwrap(),
            workflow::COMMANDS
                .iter()
                .find(|(n, _)| *n == "do")
                .unwrap()
                .1
        );
        let lines = uninstall_from(&layout, &mut |_| {}).unwrap();
        assert_eq!(count(&lines, "removed"), all - 1, "{lines:#?}");
        assert_eq!(std::fs::read_to_string(&edited).unwrap(), "my own notes");
        assert!(!layout.manifest().exists());
        assert!(!layout.claude.exists());
    }

    #[test]
    fn foreign_things_at_our_paths_are_never_touched() {
        let home = tempfile::tempdir().unwrap();
        let layout = layout(home.path());
        let elsewhere = home.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(layout.claude.join("commands")).unwrap();
        std::fs::create_dir_all(layout.claude.join("skills/quality")).unwrap();
        std::fs::write(layout.claude.join("skills/quality/SKILL.md"), "mine").unwrap();
        std::fs::write(layout.claude.join("commands/dive.md"), "mine").unwrap();
        std::fs::create_dir_all(layout.codex.join("skills")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, layout.codex_skill("summary")).unwrap();

        for copy in [false, true] {
            let lines = install_into(&layout, copy, &mut |_| {}).unwrap();
            assert_eq!(count(&lines, "skipped: not ours"), 3, "{lines:#?}");
        }
        let lines = uninstall_from(&layout, &mut |_| {}).unwrap();
        assert_eq!(count(&lines, "skipped: not ours"), 3, "{lines:#?}");
        assert_eq!(
            std::fs::read_to_string(layout.claude.join("commands/dive.md")).unwrap(),
            "mine"
        );
        assert_eq!(
            std::fs::read_link(layout.codex_skill("summary")).unwrap(),
            elsewhere
        );
        // The folders that existed before install are still there.
        assert!(layout.claude.join("commands").is_dir());
        assert!(layout.codex.join("skills").is_dir());
    }

    impl Layout {
        fn codex_skill(&self, name: &str) -> PathBuf {
            self.codex.join("skills").join(name)
        }
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(""), "fnv1a64:cbf29ce484222325");
        assert_eq!(fingerprint("a"), "fnv1a64:af63dc4c8601ec8c");
    }
}
