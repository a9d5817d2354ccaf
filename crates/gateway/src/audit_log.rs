//! The audit log as the gateway's pages show it, read from the audit
//! service's `GET /v1/events` (newest first, keyset paging through an
//! opaque `next_cursor`):
//!
//! - the logs page (roles `auditor`/`admin`) and the admin dashboard read
//!   with the *user's* authority: their token exchanged for the audit
//!   audience, so the audit service decides (and records) who may read;
//! - the home page's "recent activity" reads the caller's own events
//!   (`actor` = their `sub`) with the gateway's client-credentials token
//!   (scope `audit.read`), since plain users may not query the log.

use std::collections::HashMap;

use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::{GatewayError, Result};

/// Roles that may read the logs.
pub const LOG_READERS: [&str; 2] = ["auditor", "admin"];
/// Events on one logs page.
const PAGE_SIZE: usize = 50;
/// The most the dashboard reads per action (pages of 1,000).
const CHART_MAX_PAGES: usize = 20;
/// Actors the logs page looks up by their latest sign-in, per page shown.
const NAME_LOOKUPS: usize = 10;
/// Identity's login actions (`crates/identity/src/login.rs`).
const LOGIN_SUCCESS: &str = "auth.login.success";
const LOGIN_FAILURE: &str = "auth.login.failure";

/// The logs page's filters, as typed in its form.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogFilters {
    pub service: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub level: Option<String>,
    pub outcome: Option<String>,
    /// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (UTC) or Unix milliseconds.
    pub since: Option<String>,
    pub until: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
}

/// One event, the fields pages show.
#[derive(Debug, Clone, Deserialize)]
pub struct LogEvent {
    /// Unix milliseconds.
    pub time: i64,
    pub service: String,
    pub level: String,
    pub action: String,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub ip: Option<String>,
    #[serde(default)]
    pub message: String,
    /// The event's structured detail (client id, reason, …): an object.
    #[serde(default)]
    pub context: serde_json::Value,
}

/// A page of events and the cursor of the next, older page.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsPage {
    pub events: Vec<LogEvent>,
    pub next_cursor: Option<String>,
}

/// Logins per hour over the last 24 hours, oldest hour first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChart {
    /// Unix seconds of the first hour's start.
    pub start: i64,
    pub success: [u32; 24],
    pub failure: [u32; 24],
}

impl LogFilters {
    /// The filters by their query names (without the cursor).
    pub fn named(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("service", &self.service),
            ("action", &self.action),
            ("actor", &self.actor),
            ("level", &self.level),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ]
    }

    /// The audit service's query parameters for these filters.
    fn query(&self) -> Result<Vec<(&'static str, String)>> {
        let mut query = Vec::new();
        for (name, value) in self.named().into_iter().chain([("cursor", &self.cursor)]) {
            let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
                continue;
            };
            let value = match name {
                "since" | "until" => parse_time_ms(value)?.to_string(),
                _ => value.to_owned(),
            };
            query.push((name, value));
        }
        query.push(("limit", PAGE_SIZE.to_string()));
        Ok(query)
    }
}

impl Gateway {
    /// The logs page: only for auditors and admins, with their authority.
    pub async fn logs(&self, principal: &Principal, filters: &LogFilters) -> Result<EventsPage> {
        if !principal.has_any_role(&LOG_READERS) {
            return Err(GatewayError::Forbidden(
                "the logs are for auditors and admins".into(),
            ));
        }
        let token = self
            .token_for(principal, &self.config.audit_audience)
            .await?;
        self.audit_events(token, &filters.query()?).await
    }

    /// Usernames of the actors of `events`, for people reading the log:
    /// from identity's sign-in events among them (`auth.login.success`
    /// names the username), else from each actor's latest sign-in in the
    /// log, at most [`NAME_LOOKUPS`] lookups for one page, read with the
    /// reader's own authority. An actor not found (a client, a user who
    /// never signed in) keeps its id.
    pub async fn actor_names(
        &self,
        principal: &Principal,
        events: &[LogEvent],
    ) -> HashMap<String, String> {
        let mut names = HashMap::new();
        for event in events.iter().filter(|e| e.action == LOGIN_SUCCESS) {
            if let (Some(actor), Some(name)) = (&event.actor, event.context["username"].as_str()) {
                names.insert(actor.clone(), name.to_owned());
            }
        }
        let mut unknown: Vec<&str> = events
            .iter()
            .filter_map(|e| e.actor.as_deref())
            .filter(|actor| !names.contains_key(*actor))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return names;
        }
        let Ok(token) = self.token_for(principal, &self.config.audit_audience).await else {
            return names;
        };
        for actor in unknown.into_iter().take(NAME_LOOKUPS) {
            let query = [
                ("action", LOGIN_SUCCESS.to_owned()),
                ("actor", actor.to_owned()),
                ("limit", "1".to_owned()),
            ];
            let found = self.audit_events(token.clone(), &query).await;
            let name = found.ok().and_then(|page| {
                let event = page.events.into_iter().next()?;
                event.context["username"].as_str().map(str::to_owned)
            });
            if let Some(name) = name {
                names.insert(actor.to_owned(), name);
            }
        }
        names
    }

    /// The caller's own latest events, for the home page.
    pub async fn recent_activity(&self, principal: &Principal) -> Result<Vec<LogEvent>> {
        let token = self.own_audit_token().await?;
        let token = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| GatewayError::Identity("a token that is no header value".into()))?;
        let query = [
            ("actor", principal.subject.clone()),
            ("limit", "10".to_owned()),
        ];
        Ok(self.audit_events(token, &query).await?.events)
    }

    /// Successful and failed logins per hour over the last day (admins).
    pub async fn login_chart(&self, principal: &Principal) -> Result<LoginChart> {
        if !principal.has_any_role(&["admin"]) {
            return Err(GatewayError::Forbidden(
                "the dashboard is for admins".into(),
            ));
        }
        let token = self
            .token_for(principal, &self.config.audit_audience)
            .await?;
        let now = self.clock.now();
        let start = (now - now.rem_euclid(3600)) - 23 * 3600;
        let mut chart = LoginChart {
            start,
            success: [0; 24],
            failure: [0; 24],
        };
        for (action, counts) in [
            (LOGIN_SUCCESS, &mut chart.success),
            (LOGIN_FAILURE, &mut chart.failure),
        ] {
            let mut query = vec![
                ("action", action.to_owned()),
                ("since", (start * 1000).to_string()),
                ("limit", "1000".to_owned()),
            ];
            for _ in 0..CHART_MAX_PAGES {
                let page = self.audit_events(token.clone(), &query).await?;
                for event in &page.events {
                    let hour = (event.time / 1000 - start).div_euclid(3600);
                    if let Some(count) = usize::try_from(hour).ok().and_then(|h| counts.get_mut(h))
                    {
                        *count += 1;
                    }
                }
                let Some(cursor) = page.next_cursor else {
                    break;
                };
                query.retain(|(name, _)| *name != "cursor");
                query.push(("cursor", cursor));
            }
        }
        Ok(chart)
    }

    /// `GET <audit>/v1/events?query`, read with the `Authorization`
    /// header `authorization`.
    async fn audit_events(
        &self,
        authorization: HeaderValue,
        query: &[(&str, String)],
    ) -> Result<EventsPage> {
        let unavailable = |cause: String| GatewayError::UpstreamUnavailable {
            upstream: "audit".into(),
            cause,
        };
        let base = self
            .config
            .audit_url
            .as_deref()
            .ok_or_else(|| unavailable("no audit service is configured".into()))?;
        let response = self
            .http
            .get(format!("{base}/v1/events"))
            .headers(echo_edge::trace::headers())
            .query(query)
            .header(AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match response.status() {
            status if status.is_success() => response
                .json()
                .await
                .map_err(|e| unavailable(format!("unreadable answer: {e}"))),
            reqwest::StatusCode::FORBIDDEN => Err(GatewayError::Forbidden(
                "the audit service refused this reader".into(),
            )),
            reqwest::StatusCode::BAD_REQUEST => {
                let detail = response.text().await.unwrap_or_default();
                Err(GatewayError::BadRequest(format!(
                    "the audit service refused the filters: {}",
                    detail.chars().take(200).collect::<String>()
                )))
            }
            status => Err(unavailable(format!("answered {status}"))),
        }
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC) or Unix milliseconds, as
/// Unix milliseconds.
pub fn parse_time_ms(text: &str) -> Result<i64> {
    let bad = || {
        GatewayError::BadRequest(format!(
            "{text:?} is not a time: use YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or Unix milliseconds"
        ))
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00"));
    let numbers =
        |s: &str, sep: char| -> Option<Vec<i64>> { s.split(sep).map(|n| n.parse().ok()).collect() };
    let date = numbers(date, '-').ok_or_else(bad)?;
    let mut time = numbers(time, ':').ok_or_else(bad)?;
    time.resize(3, 0);
    let [year, month, day] = date[..] else {
        return Err(bad());
    };
    let [hour, minute, second] = time[..] else {
        return Err(bad());
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..60).contains(&second)
    {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of
    // `http::pages::utc`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_milliseconds() {
        assert_eq!(parse_time_ms("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_ms("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time_ms("2000-02-29").unwrap(), 951_782_400_000);
        assert_eq!(
            parse_time_ms("2025-12-31T23:59:59").unwrap(),
            1_767_225_599_000
        );
        assert_eq!(
            parse_time_ms("2025-12-31T23:59").unwrap(),
            1_767_225_540_000
        );
        for bad in ["yesterday", "2025-13-01", "2025-01-01T25:00", "2025-01"] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_filters_are_left_out() {
        let filters = LogFilters {
            action: Some("auth.login.failure".into()),
            actor: Some("  ".into()),
            since: Some("1970-01-02".into()),
            ..LogFilters::default()
        };
        let query = filters.query().unwrap();
        assert_eq!(
            query,
            vec![
                ("action", "auth.login.failure".to_owned()),
                ("since", "86400000".to_owned()),
                ("limit", "50".to_owned()),
            ]
        );
    }
}
