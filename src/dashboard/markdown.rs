//! Markdown from the session folder (plans, artifacts) as HTML that cannot carry script.
//!
//! The agent writes these files, so they are untrusted: raw HTML blocks and inline tags are
//! turned into text (shown, not interpreted), images become their alt text (the page loads
//! nothing from elsewhere), and a link keeps its target only when it is relative or uses
//! http, https or mailto; any other scheme (`javascript:`, `data:`, ...) loses the link and keeps
//! its text. Everything else is pulldown-cmark's own HTML writer, which escapes text and
//! attribute values.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

/// Link schemes a person may follow from an artifact.
const ALLOWED_SCHEMES: [&str; 3] = ["http", "https", "mailto"];

/// Renders `text` as sanitised HTML.
pub fn render(text: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_SMART_PUNCTUATION;
    // One entry per open link: whether its tags were dropped, so that its end is dropped too.
    let mut links: Vec<bool> = Vec::new();
    let events = Parser::new_ext(text, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        Event::Start(Tag::Link { ref dest_url, .. }) => {
            let keep = safe_link(dest_url);
            links.push(!keep);
            keep.then_some(event)
        }
        Event::End(TagEnd::Link) => match links.pop() {
            Some(true) => None,
            _ => Some(event),
        },
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    html::push_html(&mut out, events);
    out
}

/// True when a link target is relative or uses an allowed scheme. Browsers ignore ASCII tabs
/// and line breaks anywhere in a URL and whitespace around it, so those are removed before the
/// scheme is read (`java\tscript:` is `javascript:` to them).
fn safe_link(url: &str) -> bool {
    let cleaned: String = url
        .trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some(colon) = cleaned.find(':') else {
        return true;
    };
    let scheme = &cleaned[..colon];
    // A colon after a path, query or fragment character is not a scheme separator.
    if scheme.contains(['/', '?', '#']) {
        return true;
    }
    ALLOWED_SCHEMES
        .iter()
        .any(|allowed| scheme.eq_ignore_ascii_case(allowed))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn raw_html_shows_as_text() {
        let html = render(
            "# Plan\n\n<script>alert(1)</script>\n\nSee <img src=x onerror=alert(2)> here.\n",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        assert!(html.contains("<h1>Plan</h1>"), "{html}");
    }

    #[test]
    fn dangerous_links_lose_their_target_and_keep_their_text() {
        for url in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            " java\tscript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "vbscript:x",
        ] {
            let html = render(&format!("[click me]({url})"));
            assert!(!html.contains("<a"), "{url}: {html}");
            assert!(html.contains("click me"), "{url}: {html}");
        }
        for url in [
            "https://example.org/x",
            "#steps",
            "notes/plan.md",
            "mailto:a@b.c",
            "/a:b",
        ] {
            let html = render(&format!("[ok]({url})"));
            assert!(html.contains("<a href="), "{url}: {html}");
        }
    }

    #[test]
    fn images_become_their_alt_text() {
        let html = render("![a diagram](https://example.org/x.png)");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("a diagram"), "{html}");
    }

    #[test]
    fn plans_keep_their_shape() {
        let html = render(
            "## Phase 1: x (profile: light)\n- [x] 1.1 done\n- [ ] 1.2 next\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(html.contains("<h2>"), "{html}");
        assert!(html.contains("type=\"checkbox\""), "{html}");
        assert!(html.contains("<table>"), "{html}");
    }
}
