//! The web dashboard in a real browser: headless Chromium driven over WebDriver (fantoccini)
//! against the real daemon with the scripted agent. Each test saves a screenshot under
//! `tests/browser/screenshots/`. Needs Debian's `chromium` and `chromium-driver` (`.ci/run`
//! installs them when missing).

mod browser {
    // The e2e tests' throwaway project and daemon, shared rather than copied.
    #[allow(dead_code)]
    #[path = "../e2e/fixture.rs"]
    pub mod fixture;

    pub mod driver;
    mod escaping;
    mod fleet;
    mod gates;
    mod security;
}
