//! A git remote's address as git is given it. An address may carry a user and password
//! (`https://x-access-token:TOKEN@host/repo.git`); a command line is seen by every local user
//! (`ps`), so git gets the address without them, and the credentials in its environment, as
//! the `Authorization` header of its HTTP requests to that server alone.

use std::path::Path;

use crate::session::worktree::GIT_LIMIT;

/// The address to put on git's command line, and what its environment needs beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRemote {
    /// The address without its user and password.
    pub url: String,
    /// The configuration (`http.<server>.extraHeader`) and its value that give git the
    /// credentials, when the address had some.
    header: Option<(String, String)>,
}

impl GitRemote {
    /// The remote at `url`. Only an HTTP(S) address has its credentials moved: in an SSH
    /// address the user is a login name, not a secret, and stays.
    pub fn of(url: &str) -> GitRemote {
        let http = url.split_once("://").is_some_and(|(scheme, _)| {
            matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        });
        let Some((plain, user, password)) = crate::config::split_userinfo(url).filter(|_| http)
        else {
            return GitRemote {
                url: url.to_string(),
                header: None,
            };
        };
        // Scoped to this server: a redirect elsewhere does not carry it.
        let server = plain
            .split_once("://")
            .map_or(plain.as_str(), |(_, rest)| rest);
        let scheme = &plain[..plain.len() - server.len()];
        let server = server.split(['/', '?', '#']).next().unwrap_or(server);
        let key = format!("http.{scheme}{server}/.extraHeader");
        let value = format!(
            "Authorization: {}",
            crate::config::basic_auth(&user, &password)
        );
        GitRemote {
            url: plain.clone(),
            header: Some((key, value)),
        }
    }

    /// Gives `command` (a git) the credentials, if there are any, after the `GIT_CONFIG_*`
    /// settings samocode's own environment gives git (a CA, a proxy), which stay.
    pub fn credentials(&self, command: &mut tokio::process::Command) {
        let Some((key, value)) = &self.header else {
            return;
        };
        let given = std::env::var("GIT_CONFIG_COUNT")
            .ok()
            .and_then(|count| count.trim().parse::<usize>().ok())
            .unwrap_or(0);
        command
            .env("GIT_CONFIG_COUNT", (given + 1).to_string())
            .env(format!("GIT_CONFIG_KEY_{given}"), key)
            .env(format!("GIT_CONFIG_VALUE_{given}"), value);
    }
}

/// `git -C DIR ARGS`, with the credentials of the `remote` it talks to: its standard output
/// (trimmed), or why it failed, in git's words with any address's user and password hidden.
/// It never asks for a password (a refused credential fails at once, also on a terminal),
/// runs none of the repository's hooks, and is stopped, with what it started, after
/// [`GIT_LIMIT`].
pub async fn run_git(
    dir: &Path,
    args: &[&str],
    remote: Option<&GitRemote>,
) -> Result<String, String> {
    let mut command =
        tokio::process::Command::from(crate::session::worktree::git_command(dir, args));
    if let Some(remote) = remote {
        remote.credentials(&mut command);
    }
    // Stopped with its helpers (git-remote-http holds the connection).
    let output = match crate::session::worktree::output_within(command, GIT_LIMIT).await {
        Some(output) => output.map_err(|e| format!("cannot run git: {e}"))?,
        None => {
            return Err(format!(
                "git {} did not end within {} and was stopped",
                args.first().unwrap_or(&""),
                humantime::format_duration(GIT_LIMIT)
            ));
        }
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        let said = String::from_utf8_lossy(&output.stderr);
        Err(crate::config::without_userinfo(said.trim()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::GitRemote;

    #[test]
    fn credentials_leave_the_address_for_the_environment() {
        let remote = GitRemote::of("https://x-access-token:ghp%2Fabc@git.example:8443/o/r.git");
        assert_eq!(remote.url, "https://git.example:8443/o/r.git");
        let mut command = tokio::process::Command::new("git");
        remote.credentials(&mut command);
        let env: Vec<(String, String)> = command
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert!(env.contains(&(
            "GIT_CONFIG_KEY_0".into(),
            "http.https://git.example:8443/.extraHeader".into()
        )));
        // base64 of `x-access-token:ghp/abc`
        assert!(env.contains(&(
            "GIT_CONFIG_VALUE_0".into(),
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwL2FiYw==".into()
        )));
        let token_only = GitRemote::of("http://TOKEN@h/r");
        assert_eq!(token_only.url, "http://h/r");
    }

    #[test]
    fn addresses_without_credentials_or_over_ssh_stay_as_they_are() {
        for url in [
            "https://host/o/r.git",
            "ssh://git@host/o/r.git",
            "git@host:o/r.git",
            "/srv/git/r.git",
            "https://host/path@x",
        ] {
            let remote = GitRemote::of(url);
            assert_eq!(remote.url, url);
            assert_eq!(remote, GitRemote::of(url));
            let mut command = tokio::process::Command::new("git");
            remote.credentials(&mut command);
            assert_eq!(command.as_std().get_envs().count(), 0, "{url}");
        }
    }
}
