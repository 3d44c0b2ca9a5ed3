//! Artifact names: `MM-DD-HH:MM-<kind>-<slug>.md` in the session folder (workflow.md), such as
//! `03-14-09:05-plan-jwt-login.md`. The kind is the word after the time, never a word of the
//! slug (`requirements-meal-plan-export` is a requirements artifact). The name carries no
//! year, so a session's artifacts are ordered from the day the session was created (its
//! folder's `YY-MM-DD`): a plan of `01-01` in a session created on `12-30` is newer than one of
//! `12-31`.

/// An artifact's name, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactName<'a> {
    /// Month, day, hour, minute.
    pub stamp: (u8, u8, u8, u8),
    pub kind: &'a str,
    pub slug: &'a str,
}

/// Reads `file` as an artifact's name; `None` for any other file.
pub fn parse(file: &str) -> Option<ArtifactName<'_>> {
    let stem = file.strip_suffix(".md")?;
    let stamp = stem.get(..11)?;
    let rest = stem.get(11..)?.strip_prefix('-')?;
    let bytes = stamp.as_bytes();
    let shaped = bytes.iter().enumerate().all(|(i, b)| match i {
        2 | 5 => *b == b'-',
        8 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    if !shaped {
        return None;
    }
    let number = |at: usize| stamp[at..at + 2].parse::<u8>().ok();
    let (month, day, hour, minute) = (number(0)?, number(3)?, number(6)?, number(9)?);
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60;
    let (kind, slug) = rest.split_once('-').unwrap_or((rest, ""));
    (valid && !kind.is_empty()).then_some(ArtifactName {
        stamp: (month, day, hour, minute),
        kind,
        slug,
    })
}

/// The month and day a session was created, from its folder's name (`YY-MM-DD-name`).
pub fn created(folder: &str) -> Option<(u8, u8)> {
    let month = folder.get(3..5)?.parse().ok()?;
    let day = folder.get(6..8)?.parse().ok()?;
    (folder.as_bytes().get(2) == Some(&b'-') && folder.as_bytes().get(5) == Some(&b'-'))
        .then_some((month, day))
}

/// The order of an artifact's time in a session created on `created` (month, day): a date
/// well before that day in the calendar was in the next year. The agent stamps its names with
/// its own clock, whose date may be a day behind the worker's (another time zone, a pod on
/// UTC): a date up to two days before the session's first day counts as that same year.
fn order(stamp: (u8, u8, u8, u8), created: Option<(u8, u8)>) -> (i16, u8, u8) {
    // The day of a 366-day year (February 29 has its day): counted from the session's first
    // day round the year, so that neither a month's length nor the year's end breaks the
    // order (`02-28` is two days before `03-01`, `12-31` one before `01-01`).
    const BEFORE: [i16; 12] = [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335];
    let of =
        |(month, day): (u8, u8)| BEFORE[usize::from(month.clamp(1, 12)) - 1] + i16::from(day) - 1;
    let at = of((stamp.0, stamp.1));
    let day = match created {
        Some(first) => {
            let since = (at - of(first)).rem_euclid(366);
            // Up to two days before the first day: the agent's clock behind the worker's.
            if since >= 366 - 2 { since - 366 } else { since }
        }
        None => at,
    };
    (day, stamp.2, stamp.3)
}

/// Sorts artifact file names oldest first, in a session created on `created`; names that are
/// not artifacts' come first, by name.
pub fn sort(files: &mut [String], created: Option<(u8, u8)>) {
    sort_by_made(files, created, |_| ());
}

/// [`sort`], where two names of one minute are in the order `made` gives them (when each file
/// was made, which the caller reads from the disk) before the order of their names.
pub fn sort_by_made<T: Ord>(
    files: &mut [String],
    created: Option<(u8, u8)>,
    made: impl Fn(&str) -> T,
) {
    // `made` is asked only of names of one minute: the caller reads it from the disk.
    files.sort_by(|a, b| {
        let key = |f: &String| parse(f).map(|n| order(n.stamp, created));
        key(a)
            .cmp(&key(b))
            .then_with(|| made(a).cmp(&made(b)))
            .then_with(|| a.cmp(b))
    });
}

/// The newest of `files` whose kind is `kind`, in a session created on `created`.
pub fn newest<'a>(
    files: impl IntoIterator<Item = &'a str>,
    kind: &str,
    created: Option<(u8, u8)>,
) -> Option<&'a str> {
    newest_by_made(files, kind, created, |_| ())
}

/// [`newest`], where of two names of one minute the one `made` gives the later key wins (a
/// plan revised in the minute its rejected one was written), then the later name.
pub fn newest_by_made<'a, T: Ord>(
    files: impl IntoIterator<Item = &'a str>,
    kind: &str,
    created: Option<(u8, u8)>,
    made: impl Fn(&str) -> T,
) -> Option<&'a str> {
    files
        .into_iter()
        .filter_map(|file| parse(file).map(|name| (name, file)))
        .filter(|(name, _)| name.kind == kind)
        .max_by(|(a, fa), (b, fb)| {
            order(a.stamp, created)
                .cmp(&order(b.stamp, created))
                .then_with(|| made(fa).cmp(&made(fb)))
                .then_with(|| fa.cmp(fb))
        })
        .map(|(_, file)| file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_behind_at_a_months_or_a_years_end_is_older_than_the_first_day() {
        // The agent's clock on UTC, a day behind a worker in Kiritimati: its first plan is
        // stamped the day before the session's folder date; the revised one comes after.
        for (created, first, revised) in [
            (
                "27-01-01-ye",
                "12-31-18:30-plan-steps.md",
                "01-01-00:30-plan-steps.md",
            ),
            (
                "27-03-01-mar",
                "02-28-18:30-plan-steps.md",
                "03-01-00:30-plan-steps.md",
            ),
            (
                "28-03-01-leap",
                "02-29-18:30-plan-steps.md",
                "03-01-00:30-plan-steps.md",
            ),
            (
                "26-12-30-login",
                "12-31-23:58-plan-login.md",
                "01-01-00:03-plan-login.md",
            ),
        ] {
            let created = super::created(created);
            assert_eq!(
                newest([revised, first], "plan", created),
                Some(revised),
                "{first}"
            );
            assert_eq!(
                newest([first, revised], "plan", created),
                Some(revised),
                "{first}"
            );
            let mut files = vec![revised.to_string(), first.to_string()];
            sort(&mut files, created);
            assert_eq!(files, [first, revised]);
        }
        // A date well before the first day is of the next year.
        let created = super::created("26-12-30-long");
        assert_eq!(
            newest(
                ["12-30-10:00-plan-a.md", "03-01-10:00-plan-a.md"],
                "plan",
                created
            ),
            Some("03-01-10:00-plan-a.md")
        );
    }

    #[test]
    fn of_two_plans_of_one_minute_the_one_made_later_is_newer() {
        // A plan rejected and its revision written in the same minute, under another slug:
        // the name's order would take the rejected one.
        let (rejected, revised) = ("12-07-19:05-plan-zeta.md", "12-07-19:05-plan-alpha.md");
        let made = |file: &str| u8::from(file == revised);
        let created = created("26-12-07-login");
        assert_eq!(newest([rejected, revised], "plan", created), Some(rejected));
        assert_eq!(
            newest_by_made([rejected, revised], "plan", created, made),
            Some(revised)
        );
        let mut files = vec![revised.to_string(), rejected.to_string()];
        sort_by_made(&mut files, created, made);
        assert_eq!(files, [rejected, revised]);
        // Another minute is still the name's.
        let later = "12-07-19:06-plan-beta.md";
        assert_eq!(
            newest_by_made([later, rejected, revised], "plan", created, made),
            Some(later)
        );
    }

    #[test]
    fn the_kind_is_the_word_after_the_time() {
        let name = parse("12-06-15:48-requirements-meal-plan-export.md").unwrap();
        assert_eq!(name.kind, "requirements");
        assert_eq!(name.slug, "meal-plan-export");
        assert_eq!(parse("03-14-09:05-plan.md").unwrap().kind, "plan");
        for other in [
            "_overview.md",
            "plan-x.md",
            "13-01-10:00-plan-x.md",
            "12-06-24:00-plan-x.md",
            "12-06-15:48-plan-x.txt",
            "12-06-15:48-.md",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_newest_plan_is_the_latest_of_its_kind_across_the_new_year() {
        let files = [
            "12-31-23:58-plan-login.md",
            "01-01-00:03-plan-login.md",
            "01-01-00:05-requirements-meal-plan-export.md",
            "notes.md",
        ];
        let created = created("26-12-30-login");
        assert_eq!(created, Some((12, 30)));
        assert_eq!(
            newest(files, "plan", created),
            Some("01-01-00:03-plan-login.md")
        );
        // A clock a day behind the worker's: the same year.
        let skewed = [
            "03-14-23:50-plan-x.md",
            "03-15-09:00-plan-x.md",
            "03-15-10:00-plan-y.md",
        ];
        assert_eq!(
            newest(skewed, "plan", Some((3, 15))),
            Some("03-15-10:00-plan-y.md")
        );
        // Without the session's day, the calendar order is all there is.
        assert_eq!(
            newest(files, "plan", None),
            Some("12-31-23:58-plan-login.md")
        );
        let mut sorted: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        sort(&mut sorted, created);
        assert_eq!(
            sorted,
            [
                "notes.md",
                "12-31-23:58-plan-login.md",
                "01-01-00:03-plan-login.md",
                "01-01-00:05-requirements-meal-plan-export.md",
            ]
        );
    }
}
