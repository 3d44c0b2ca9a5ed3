//! A headless Chromium driven over WebDriver: Debian's `chromium` and `chromedriver`, one
//! chromedriver per test on a free port, a fresh profile, and everything killed on drop. Also a
//! bare HTTP/1.1 client for requests a browser would not make (no cookie, no CSRF field).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A browser session; its chromedriver and browser processes die with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: `apt-get install -y chromium chromium-driver` (.ci/run does it)"
            );
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        use std::os::unix::process::CommandExt;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can kill it and whatever it started.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut guard = Guard(Some(driver));
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The machine has no network: without these switches Chromium waits on services it
        // cannot reach. As root it needs --no-sandbox.
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-crash-reporter".into(),
            "--disable-breakpad".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with chromium");
        Browser {
            client,
            driver: guard.0.take().unwrap(),
            profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits until the first element matching `css` shows text containing `wanted`.
    pub async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let start = Instant::now();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text.contains(wanted)
            {
                return text;
            }
            if start.elapsed() > PATIENCE {
                let body = self.client.source().await.unwrap_or_default();
                panic!("timed out waiting for {css} to show {wanted:?}; the page:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a script in the page returns `wanted`.
    pub async fn wait_js(&self, script: &str, wanted: serde_json::Value) {
        let start = Instant::now();
        loop {
            let value = self.js(script).await;
            if value == wanted {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for `{script}` to return {wanted}; it returns {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// Saves the page as `NAME.png` under cargo's temporary directory for tests, or, with
    /// `SAMOCODE_SCREENSHOTS=readme`, in `tests/browser/screenshots/` where the README shows
    /// them (so that a test run leaves the checkout as it was).
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = if std::env::var("SAMOCODE_SCREENSHOTS").as_deref() == Ok("readme") {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/screenshots")
        } else {
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Saves the whole page, not only the window (see [`Self::screenshot`]).
    pub async fn screenshot_page(&self, name: &str) {
        let (width, height) = self.client.get_window_size().await.unwrap();
        let tall = self
            .js("return document.documentElement.scrollHeight;")
            .await
            .as_u64()
            .unwrap_or(900);
        // The window's height includes the browser's own bar, about 150 pixels headless.
        self.resize(width as u32, (tall + 150).min(6000) as u32)
            .await;
        self.screenshot(name).await;
        self.resize(width as u32, height as u32).await;
    }

    /// Resizes the window (for narrow-window screenshots).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// The value of the dashboard's session cookie, HttpOnly as it is.
    pub async fn session_cookie(&self) -> String {
        self.client
            .get_named_cookie("samocode_session")
            .await
            .expect("logged in")
            .value()
            .to_string()
    }

    /// Ends the WebDriver session (Chromium quits); drop kills what is left.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser first, while its driver still lives to reap it.
        kill_browsers_of(self.profile.path());
        kill_group(&mut self.driver);
    }
}

/// Kills a chromedriver's process group when a test fails before the browser is up.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_group(child);
        }
    }
}

fn kill_group(child: &mut Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// Chromium's processes that outlive their driver, found by the profile in their command
/// line: given a few seconds to quit by themselves (a closed session makes them), then killed.
fn kill_browsers_of(profile: &Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let start = Instant::now();
    loop {
        let left = browsers_of(&marker);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live (not zombie) processes whose command line holds `marker`.
fn browsers_of(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            // A zombie's command line reads empty, so it is not counted.
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP answer: status, headers (lowercase names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to `base` (`http://127.0.0.1:PORT`) with an optional cookie and form.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Answer {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("the dashboard answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: samocode_session={cookie}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Logs in with the one-time `link` over plain HTTP; the session cookie's value.
pub fn login_cookie(base: &str, link: &str) -> String {
    let login = http(base, "GET", &link[base.len()..], None, None);
    let set = login.header("set-cookie").unwrap_or_default().to_string();
    set.strip_prefix("samocode_session=")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie in {set:?}"))
        .to_string()
}

/// The value of the first form field `name` in a page.
pub fn form_field(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no {name} field"))
        .to_string()
}

/// The dashboard's address and a login link, from `samocode dashboard --no-open`.
pub fn login_link(project: &super::fixture::Project) -> (String, String) {
    let run = project.run(&["dashboard", "--no-open"]);
    run.expect(0);
    let link = run.stdout().lines().next().unwrap_or_default().to_string();
    let base = link
        .split("/login?token=")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{}", run.stdout());
    (base, link)
}

/// Starts a session through the daemon and waits until it asks its questions.
pub fn start_until_questions(project: &super::fixture::Project, name: &str) -> PathBuf {
    project
        .run(&["start", "--session", name, "--dive", "d", "--task", "t"])
        .expect(0);
    super::fixture::wait_for(PATIENCE, &format!("{name} to ask its questions"), || {
        project.status().iter().any(|r| {
            r["name"].as_str().is_some_and(|n| n.ends_with(name))
                && r["waiting_for"] == "qa_answers"
        })
    });
    project.session(name).0
}

/// A person at the dashboard over plain HTTP, as a form posts: the daemon serving it on a port
/// of its own, session `name` at its questions, and a login.
pub struct Visitor {
    _daemon: super::fixture::Daemon,
    /// The session's folder.
    pub dir: PathBuf,
    /// Its folder name, its path on the dashboard.
    pub folder: String,
    pub base: String,
    pub cookie: String,
}

impl Visitor {
    pub fn at_questions(project: &mut super::fixture::Project, name: &str) -> Visitor {
        let daemon = project.daemon(&["--http", "127.0.0.1:0"]);
        let dir = start_until_questions(project, name);
        let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (base, link) = login_link(project);
        let cookie = login_cookie(&base, &link);
        Visitor {
            _daemon: daemon,
            dir,
            folder,
            base,
            cookie,
        }
    }

    /// The session's page.
    pub fn page(&self) -> Answer {
        self.page_named(&self.folder)
    }

    /// The page of the session `name` names (its folder or short name).
    pub fn page_named(&self, name: &str) -> Answer {
        let path = format!("/sessions/{name}");
        http(&self.base, "GET", &path, Some(&self.cookie), None)
    }

    /// Posts `form` to the session's action `verb`.
    pub fn post(&self, verb: &str, form: &str) -> Answer {
        let path = format!("/sessions/{}/{verb}", self.folder);
        http(&self.base, "POST", &path, Some(&self.cookie), Some(form))
    }

    /// The session's `_qa.md`.
    pub fn questions(&self) -> String {
        std::fs::read_to_string(self.dir.join("_qa.md")).unwrap()
    }
}
