//! `samocode dashboard [--no-open]`: asks the running daemon for its web dashboard's address
//! and a one-time login token, prints the login link, and opens it in a browser when one can
//! be started. Also the dashboard's flags of `samocode supervise`.

use std::process::{Command, Stdio};

use clap::Args;

use super::daemon::Client;
use super::{CliError, exit};
use crate::config::{Config, Flags};
use crate::control::{Request, Response};

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Print the link only; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// The dashboard's settings on `samocode supervise`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve the web dashboard at this address (default 127.0.0.1:7420; also SAMOCODE_HTTP).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    pub http: Option<String>,
    /// Do not serve the web dashboard.
    #[arg(long)]
    pub no_http: bool,
    /// A file holding a secret (32 characters or more, mode 0600) that logs in to the
    /// dashboard; required to listen on an address other than loopback.
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<String>,
}

impl HttpArgs {
    pub fn apply(&self, flags: &mut Flags) {
        flags.http = match self.no_http {
            true => Some("off".into()),
            false => self.http.clone(),
        };
        flags.http_token_file = self.http_token_file.clone();
    }
}

pub async fn dashboard(args: DashboardArgs, config: &Config) -> Result<u8, CliError> {
    let Some(client) = Client::connect(config).await? else {
        return Err(CliError::usage(anyhow::anyhow!(
            "no samocode daemon is running (no control socket at {}); the dashboard is served by `samocode supervise`",
            config.control_socket.display()
        )));
    };
    let link = match client.request(Request::Dashboard).await? {
        Response::Dashboard { url, token } => format!("{url}/login?token={token}"),
        Response::Error { message, code } => {
            return Err(CliError {
                code,
                error: anyhow::anyhow!(message),
            });
        }
        _ => {
            return Err(CliError::failure(anyhow::anyhow!(
                "unexpected answer from the daemon"
            )));
        }
    };
    println!("{link}");
    println!("(the link logs in once, within 10 minutes)");
    if !args.no_open && !open(&link, &config.state_dir) {
        println!("no browser could be started here; open the link in one");
    }
    Ok(exit::DONE)
}

/// Starts the desktop's browser on `link`; false when no opener exists or it failed (on a
/// server without a desktop, say). The browser is given a page of the state directory (0600)
/// that leads on to the link, not the link itself: a command line is seen by every local
/// user, who could log in with its token first.
fn open(link: &str, state_dir: &std::path::Path) -> bool {
    let page = state_dir.join("dashboard-login.html");
    let html = format!(
        "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={link}\"><a href=\"{link}\">samocode dashboard</a>\n"
    );
    let _ = std::fs::remove_file(&page);
    let written = {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&page)
            .and_then(|mut file| file.write_all(html.as_bytes()))
    };
    if written.is_err() {
        return false;
    }
    let target = file_url(&page);
    ["xdg-open", "open"].iter().any(|opener| {
        Command::new(opener)
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// The `file://` address of `page`, its path percent-encoded: a state folder with `#`, `%` or
/// `?` in its path opened another address (a browser reads what follows `#` as a fragment).
fn file_url(page: &std::path::Path) -> String {
    url::Url::from_file_path(page)
        .map(String::from)
        .unwrap_or_else(|()| format!("file://{}", page.display()))
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn the_login_page_address_is_its_path_whatever_the_path_holds() {
        let page = std::path::Path::new("/tmp/s#t %41?x/dashboard-login.html");
        let address = super::file_url(page);
        assert_eq!(
            address,
            "file:///tmp/s%23t%20%2541%3Fx/dashboard-login.html"
        );
        let back = url::Url::parse(&address).unwrap().to_file_path().unwrap();
        assert_eq!(back, page);
    }
}
