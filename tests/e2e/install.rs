//! `samocode install` / `uninstall` in a throwaway HOME: they leave it exactly as they found it,
//! and never touch a file of someone else's at a path they would use.

use std::path::{Path, PathBuf};

use super::fixture::{Project, Run};

/// Every file, folder and symlink under `dir`: its path, kind, and content or link target.
fn listing(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read_to_string(&path).unwrap())
            };
            out.push((path.strip_prefix(dir).unwrap().to_path_buf(), what));
        }
    }
    out.sort();
    out
}

fn samocode(project: &Project, args: &[&str]) -> Run {
    // The default CODEX_HOME (~/.codex under the test HOME), whatever the machine sets.
    let output = project
        .command(args)
        .env_remove("CODEX_HOME")
        .output()
        .unwrap();
    Run(output)
}

fn lines_with(run: &Run, verdict: &str) -> usize {
    run.stdout()
        .lines()
        .filter(|l| l.starts_with(&format!("{verdict}: ")))
        .count()
}

#[test]
fn install_then_uninstall_leaves_an_empty_home_as_it_was() {
    let project = Project::new();
    let home = project.root.join("home");
    let before = listing(&home);
    for flags in [&["install"][..], &["install", "--copy"][..]] {
        let installed = samocode(&project, flags);
        installed.expect(0);
        assert_eq!(lines_with(&installed, "skipped: not ours"), 0);
        assert!(home.join(".claude/skills/planning/SKILL.md").is_file());
        assert!(home.join(".codex/skills/implementation/SKILL.md").is_file());
        assert!(home.join(".claude/commands/do2.md").is_file());
        let removed = samocode(&project, &["uninstall"]);
        removed.expect(0);
        assert_eq!(
            lines_with(&removed, "removed"),
            9 + 9 + 14,
            "{}",
            removed.stdout()
        );
        assert_eq!(listing(&home), before, "after {flags:?}");
    }
}

#[test]
fn foreign_files_where_we_would_install_survive_install_and_uninstall() {
    let project = Project::new();
    let home = project.root.join("home");
    let claude = home.join(".claude");
    std::fs::create_dir_all(claude.join("commands")).unwrap();
    std::fs::create_dir_all(claude.join("skills/testing")).unwrap();
    std::fs::write(claude.join("settings.json"), "{}\n").unwrap();
    std::fs::write(claude.join("commands/do.md"), "my own /do\n").unwrap();
    std::fs::write(claude.join("skills/testing/SKILL.md"), "my testing\n").unwrap();
    std::fs::create_dir_all(home.join(".codex/skills")).unwrap();
    std::os::unix::fs::symlink("/nowhere", home.join(".codex/skills/quality")).unwrap();
    let before = listing(&home);

    let installed = samocode(&project, &["install", "--copy"]);
    installed.expect(0);
    assert_eq!(
        lines_with(&installed, "skipped: not ours"),
        3,
        "{}",
        installed.stdout()
    );
    assert_eq!(lines_with(&installed, "installed"), 9 + 9 + 14 - 3);
    assert_eq!(
        std::fs::read_to_string(claude.join("commands/do.md")).unwrap(),
        "my own /do\n"
    );
    let again = samocode(&project, &["install", "--copy"]);
    assert_eq!(lines_with(&again, "already installed"), 9 + 9 + 14 - 3);

    let removed = samocode(&project, &["uninstall"]);
    removed.expect(0);
    assert_eq!(lines_with(&removed, "skipped: not ours"), 3);
    assert_eq!(listing(&home), before);
}

#[test]
fn an_install_that_fails_half_way_says_what_it_did_and_uninstall_undoes_it() {
    let project = Project::new();
    let home = project.root.join("home");
    let before = listing(&home);
    // A file where the commands folder goes: the first command cannot be made.
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".claude/commands"), "in the way").unwrap();
    let failed = samocode(&project, &["install"]);
    failed.expect(1);
    assert!(
        lines_with(&failed, "installed") > 0,
        "the skills made before the failure are listed: {}",
        failed.stdout()
    );
    assert!(
        failed.stderr().contains("samocode uninstall"),
        "{}",
        failed.stderr()
    );
    samocode(&project, &["uninstall"]).expect(0);
    // What is left is what the test made: the file in the way and its folder.
    std::fs::remove_file(home.join(".claude/commands")).unwrap();
    std::fs::remove_dir(home.join(".claude")).unwrap();
    assert_eq!(listing(&home), before);

    // A HOME that is not there is a mistake, not a home to make.
    let missing = project.root.join("no/such/home");
    let run = Run(project
        .command(&["install"])
        .env("HOME", &missing)
        .env_remove("CODEX_HOME")
        .output()
        .unwrap());
    run.expect(2);
    assert!(
        run.stderr().contains("not an existing folder"),
        "{}",
        run.stderr()
    );
    assert!(!project.root.join("no").exists());
    // A relative HOME (`HOME=home`) was said not to be set.
    let run = Run(project
        .command(&["install"])
        .env("HOME", "home")
        .env("SAMOCODE_STATE_DIR", project.root.join("state-of-install"))
        .env_remove("CODEX_HOME")
        .output()
        .unwrap());
    assert_ne!(run.0.status.code(), Some(0));
    assert!(
        run.stderr().contains("not an absolute path"),
        "{}",
        run.stderr()
    );
}

/// Links an earlier version installed from another checkout (`cargo install --git` builds in
/// a folder that changes with each version, and may be gone) are taken as ours: replaced by
/// `install`, not reported as someone else's (found by the upgrade hunt).
#[test]
fn links_into_an_earlier_checkout_are_replaced_not_skipped() {
    let project = Project::new();
    let home = project.root.join("home");
    samocode(&project, &["install"]).expect(0);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let old = project.root.join("gone-checkout");
    let mut moved = 0;
    for (path, what) in listing(&home) {
        if !what.starts_with("link -> ") {
            continue;
        }
        let link = home.join(&path);
        let target = std::fs::read_link(&link).unwrap();
        let relative = target.strip_prefix(checkout).unwrap().to_path_buf();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(old.join(relative), &link).unwrap();
        moved += 1;
    }
    assert!(moved > 10, "{moved} links");
    let again = samocode(&project, &["install"]);
    again.expect(0);
    assert_eq!(
        lines_with(&again, "skipped: not ours"),
        0,
        "{}",
        again.stdout()
    );
    let planning = std::fs::read_link(home.join(".claude/skills/planning")).unwrap();
    assert!(planning.starts_with(checkout), "{}", planning.display());
}
