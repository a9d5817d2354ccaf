//! HTML pages and the cookies the gateway sets.

use std::collections::HashMap;

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use echo_edge::{cookie_name, set_cookie};

use crate::audit_log::{LogEvent, LogFilters, LoginChart};
use crate::{Gateway, GatewayConfig, Principal};

/// The session cookie: an opaque id, nothing else.
pub const SESSION_COOKIE: &str = "echo_session";
/// Binds a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "echo_login";

pub fn session_cookie_name(config: &GatewayConfig) -> String {
    cookie_name(config.https(), SESSION_COOKIE)
}

pub fn login_cookie_name(config: &GatewayConfig) -> String {
    cookie_name(config.https(), LOGIN_COOKIE)
}

/// `Set-Cookie` for the session (`None` deletes it): HttpOnly,
/// SameSite=Lax (it must come along when identity sends the browser back),
/// Path=/, and Secure with the `__Host-` prefix under https.
pub fn session_cookie(config: &GatewayConfig, token: Option<&str>) -> String {
    let max_age = token.map_or(0, |_| config.session_absolute_ttl);
    set_cookie(
        config.https(),
        &session_cookie_name(config),
        token.unwrap_or(""),
        "Lax",
        max_age,
    )
}

pub fn login_cookie(config: &GatewayConfig, binding: &str) -> String {
    set_cookie(
        config.https(),
        &login_cookie_name(config),
        binding,
        "Lax",
        config.login_ttl,
    )
}

/// The navigation bar every page shares (`echo_edge::Nav`), for `user`
/// (console links by role), on the page whose link is `current`.
pub fn nav(config: &GatewayConfig, user: Option<&Principal>, current: &str) -> String {
    let roles = user.map_or(&[][..], |u| u.roles.as_slice());
    echo_edge::Nav::new(Some(""), &config.issuer, roles, current)
        .render()
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub nav: String,
    pub user: Option<&'a Principal>,
    pub issuer: &'a str,
    /// The user's own latest events; `None` when the log cannot be read.
    pub activity: Option<Vec<EventRow>>,
}

/// An event with its time and what it says beyond its action, for people.
pub struct EventRow {
    pub time: String,
    /// Who acted: their username (or client id) and opaque id.
    pub actor: Option<Named>,
    /// Whom the event is about, when not the actor (a user an admin
    /// changed).
    pub subject: Option<Named>,
    /// The message when it says more than the action (Echo's own services
    /// repeat the action there), else the detail as `name: value` pairs
    /// (without the subject, shown apart).
    pub detail: String,
    pub event: LogEvent,
}

/// Someone in the log: what people call them and, when that is not the
/// id, the opaque id beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub id: Option<String>,
}

impl Named {
    fn of(id: &str, names: &HashMap<String, String>) -> Self {
        match names.get(id) {
            Some(name) if name != id => Named {
                name: name.clone(),
                id: Some(id.to_owned()),
            },
            _ => Named {
                name: id.to_owned(),
                id: None,
            },
        }
    }
}

/// Detail fields that name the event's subject (shown in its own column).
const SUBJECT_FIELDS: [&str; 2] = ["user_id", "username"];

/// The longest detail a row shows, in characters.
const DETAIL_CHARS: usize = 300;

impl EventRow {
    pub fn all(events: Vec<LogEvent>) -> Vec<Self> {
        Self::named(events, &HashMap::new())
    }

    /// The rows of `events` as `reader` may see them named: actors by the
    /// names [`Gateway::actor_names`] finds with the reader's authority.
    pub async fn read(g: &Gateway, reader: &Principal, events: Vec<LogEvent>) -> Vec<Self> {
        let names = g.actor_names(reader, &events).await;
        Self::named(events, &names)
    }

    /// The rows of `events`, their actors and subjects named from `names`
    /// (id → username) where the event does not name them itself.
    pub fn named(events: Vec<LogEvent>, names: &HashMap<String, String>) -> Vec<Self> {
        events
            .into_iter()
            .map(|event| {
                let actor = event.actor.as_deref().map(|id| Named::of(id, names));
                let subject = subject(&event, names).filter(|s| Some(s) != actor.as_ref());
                EventRow {
                    time: utc(event.time.div_euclid(1000)),
                    detail: detail(&event),
                    actor,
                    subject,
                    event,
                }
            })
            .collect()
    }
}

/// Whom an event is about, from its `user_id` and `username` fields.
fn subject(event: &LogEvent, names: &HashMap<String, String>) -> Option<Named> {
    let field = |name: &str| event.context[name].as_str().map(str::to_owned);
    match (field("user_id"), field("username")) {
        (Some(id), Some(name)) => Some(Named { name, id: Some(id) }),
        (Some(id), None) => Some(Named::of(&id, names)),
        (None, Some(name)) => Some(Named { name, id: None }),
        (None, None) => None,
    }
}

fn detail(event: &LogEvent) -> String {
    let text = if !event.message.is_empty() && event.message != event.action {
        event.message.clone()
    } else {
        let pairs = event
            .context
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| !SUBJECT_FIELDS.contains(&name.as_str()));
        pairs
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => format!("{name}: {text}"),
                other => format!("{name}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    match text.char_indices().nth(DETAIL_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

#[derive(Template)]
#[template(path = "logs.html")]
pub struct LogsPage<'a> {
    pub nav: String,
    pub filters: &'a LogFilters,
    pub rows: Vec<EventRow>,
    /// The link to the next, older page.
    pub next: Option<String>,
}

impl LogsPage<'_> {
    /// `/logs?<filters>&cursor=<cursor>`.
    pub fn older_link(filters: &LogFilters, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in filters.named() {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(name, value);
            }
        }
        query.append_pair("cursor", cursor);
        format!("/logs?{}", query.finish())
    }
}

/// One bar of the dashboard's chart, in SVG user units.
pub struct Bar {
    pub class: &'static str,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub label: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub nav: String,
    /// The latest failures, named as on the logs page.
    pub rows: Vec<EventRow>,
    pub width: u32,
    pub height: u32,
    pub baseline: u32,
    pub max: u32,
    pub bars: Vec<Bar>,
    /// (x, label) under the axis, every third hour.
    pub ticks: Vec<(u32, String)>,
    pub total_success: u32,
    pub total_failure: u32,
}

impl DashboardPage {
    const LEFT: u32 = 40;
    const SLOT: u32 = 30;
    const BAR: u32 = 12;
    const TOP: u32 = 20;

    /// The latest failures the dashboard lists.
    pub const FAILURES: usize = 20;

    /// The chart laid out server-side: two bars per hour, scaled to the
    /// busiest hour; `rows` under it.
    pub fn of(chart: &LoginChart, rows: Vec<EventRow>, nav: String) -> Self {
        let baseline = 230;
        let max = chart
            .success
            .iter()
            .chain(&chart.failure)
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let mut bars = Vec::new();
        let mut ticks = Vec::new();
        for hour in 0..24u32 {
            let slot_x = Self::LEFT + hour * Self::SLOT;
            let start = chart.start + i64::from(hour) * 3600;
            let clock = &utc(start)[11..16];
            let series = [
                ("success", chart.success[hour as usize], 0),
                ("failure", chart.failure[hour as usize], Self::BAR + 2),
            ];
            for (class, count, offset) in series {
                let height = count * (baseline - Self::TOP) / max;
                bars.push(Bar {
                    class,
                    x: slot_x + offset,
                    y: baseline - height,
                    width: Self::BAR,
                    height,
                    label: format!("{clock} UTC: {count} {class}"),
                });
            }
            if hour % 3 == 0 {
                ticks.push((slot_x, clock.to_owned()));
            }
        }
        Self {
            nav,
            rows,
            width: Self::LEFT + 24 * Self::SLOT,
            height: baseline + 30,
            baseline,
            max,
            bars,
            ticks,
            total_success: chart.success.iter().sum(),
            total_failure: chart.failure.iter().sum(),
        }
    }
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub nav: String,
    pub user: &'a Principal,
    pub expires_at: String,
    pub idle_expires_at: String,
    pub csrf: &'a str,
}

/// The document pages: a shell each, filled in by
/// `/static/documents.js` from `/api/documents` and `/api/query` (routes
/// to the docs service).
#[derive(Template)]
#[template(path = "upload.html")]
pub struct UploadPage {
    pub nav: String,
}

#[derive(Template)]
#[template(path = "documents.html")]
pub struct DocumentsPage {
    pub nav: String,
}

#[derive(Template)]
#[template(path = "ask.html")]
pub struct AskPage {
    pub nav: String,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage;

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// A way on: (href, label).
    pub next: Option<(&'a str, &'a str)>,
}

pub async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/gateway.css"),
    )
        .into_response()
}

pub async fn documents_script() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/documents.js"),
    )
        .into_response()
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, Howard
/// Hinnant's algorithm), so pages need no date crate.
pub fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientSecret;

    #[test]
    fn session_cookie_flags_follow_the_scheme() {
        let https =
            GatewayConfig::new("https://gw.test", "https://id.test", ClientSecret::new("s"))
                .unwrap();
        let set = session_cookie(&https, Some("abc"));
        assert!(set.starts_with("__Host-echo_session=abc; Path=/; HttpOnly; SameSite=Lax"));
        assert!(set.ends_with("; Secure"));
        assert!(!set.contains("Domain"), "__Host- cookies have no Domain");
        assert!(login_cookie(&https, "b").starts_with("__Host-echo_login=b;"));

        let http =
            GatewayConfig::new("http://gw.test", "http://id.test", ClientSecret::new("s")).unwrap();
        let set = session_cookie(&http, Some("abc"));
        assert!(set.starts_with("echo_session=abc; Path=/; HttpOnly; SameSite=Lax"));
        assert!(!set.contains("Secure"));
        assert!(
            session_cookie(&http, None).contains("Max-Age=0"),
            "deletion"
        );
    }

    #[test]
    fn the_chart_scales_to_the_busiest_hour() {
        let mut chart = LoginChart {
            start: 0,
            success: [0; 24],
            failure: [0; 24],
        };
        chart.success[0] = 4;
        chart.failure[23] = 2;
        let page = DashboardPage::of(&chart, Vec::new(), String::new());
        assert_eq!(page.bars.len(), 48);
        assert_eq!((page.bars[0].height, page.bars[0].y), (210, 20), "tallest");
        assert_eq!(page.bars[47].height, 105, "half");
        assert_eq!(page.bars[1].height, 0);
        assert_eq!(page.ticks[1], (130, "03:00".to_owned()));
        assert_eq!((page.total_success, page.total_failure), (4, 2));
        let svg = page.render().unwrap();
        assert!(svg.contains("<svg class=\"chart\"") && !svg.contains("<script"));
    }

    fn event(message: &str, context: serde_json::Value) -> LogEvent {
        LogEvent {
            time: 0,
            service: "identity".into(),
            level: "warn".into(),
            action: "auth.login.failure".into(),
            actor: None,
            outcome: Some("failure".into()),
            ip: None,
            message: message.into(),
            context,
        }
    }

    #[test]
    fn a_row_shows_the_detail_not_the_action_again() {
        let repeated = event(
            "auth.login.failure",
            serde_json::json!({"reason": "bad_password", "attempts": 3}),
        );
        assert_eq!(detail(&repeated), "attempts: 3 · reason: bad_password");
        let own = event("disk almost full", serde_json::json!({"free": 1}));
        assert_eq!(detail(&own), "disk almost full");
        assert_eq!(detail(&event("", serde_json::Value::Null)), "");
        let long = event(&"é".repeat(1000), serde_json::Value::Null);
        assert_eq!(detail(&long).chars().count(), DETAIL_CHARS + 1);
    }

    #[test]
    fn actors_and_subjects_are_named_with_their_ids_beside() {
        let mut changed = event(
            "",
            serde_json::json!({"user_id": "u-bob", "username": "bob", "to": "suspended"}),
        );
        changed.actor = Some("u-root".into());
        let mut service = event("", serde_json::json!({"user_id": "u-root"}));
        service.actor = Some("worker".into());
        let names = HashMap::from([("u-root".to_owned(), "root".to_owned())]);
        let rows = EventRow::named(vec![changed, service], &names);
        let root = Named {
            name: "root".into(),
            id: Some("u-root".into()),
        };
        assert_eq!(rows[0].actor.as_ref(), Some(&root));
        assert_eq!(
            rows[0].subject,
            Some(Named {
                name: "bob".into(),
                id: Some("u-bob".into())
            })
        );
        assert_eq!(rows[0].detail, "to: suspended", "the subject not repeated");
        assert_eq!(
            rows[1].actor,
            Some(Named {
                name: "worker".into(),
                id: None
            }),
            "a client is its id"
        );
        assert_eq!(rows[1].subject.as_ref(), Some(&root), "named from the map");
    }

    #[test]
    fn utc_formats_unix_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
