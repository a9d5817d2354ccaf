//! [`Nav`]: the one navigation bar of every page people see, the
//! gateway's (the user's pages and the admin console) and identity's
//! account pages, rendered by both from the same template
//! (`templates/nav.html`) with absolute links, so each service's pages
//! lead to the other's. Console links are shown only to the roles that
//! may use them (the pages check again: a link is no permission).

use askama::Template;

/// Roles that may read the audit log.
const LOG_READERS: [&str; 2] = ["auditor", "admin"];
/// The role of the admin console.
const ADMIN: &str = "admin";

/// One link of the bar.
pub struct NavLink {
    pub href: String,
    pub label: &'static str,
    /// Names the link (`id="nav-<id>"`) and marks the current page.
    pub id: &'static str,
    /// A console link (styled apart).
    pub console: bool,
}

/// The bar for one page: where the gateway (`portal`) and identity's
/// account pages (`account`) are, whom it is for, and which page it is on.
#[derive(Template)]
#[template(path = "nav.html")]
pub struct Nav<'a> {
    pub links: Vec<NavLink>,
    /// The id of the current page's link.
    pub current: &'a str,
}

impl<'a> Nav<'a> {
    /// `portal`: the gateway's public URL, if known (identity may not
    /// know it; `""` on the gateway's own pages, whose links stay
    /// relative); `account`: identity's issuer URL; `roles`: the signed-in
    /// user's; `current`: the id of the page's own link.
    pub fn new(portal: Option<&str>, account: &str, roles: &[String], current: &'a str) -> Self {
        let has = |wanted: &[&str]| roles.iter().any(|r| wanted.contains(&r.as_str()));
        let mut links = Vec::new();
        let mut add = |base: &str, path: &str, label, id, console| {
            links.push(NavLink {
                href: format!("{}{path}", base.trim_end_matches('/')),
                label,
                id,
                console,
            });
        };
        if let Some(portal) = portal {
            add(portal, "/", "Home", "home", false);
            add(portal, "/documents", "Documents", "documents", false);
            add(portal, "/upload", "Upload", "upload", false);
            add(portal, "/ask", "Ask", "ask", false);
        }
        add(account, "/account", "Account", "account", false);
        add(account, "/account/email", "Email", "email", false);
        add(account, "/account/password", "Password", "password", false);
        add(account, "/account/sessions", "Sessions", "sessions", false);
        if let Some(portal) = portal {
            add(
                portal,
                "/sessions",
                "Portal sessions",
                "portal-sessions",
                false,
            );
            if has(&LOG_READERS) {
                add(portal, "/logs", "Logs", "logs", true);
            }
            if has(&[ADMIN]) {
                add(portal, "/admin", "Dashboard", "dashboard", true);
                add(portal, "/admin/users", "Users", "users", true);
                add(portal, "/admin/clients", "Clients", "clients", true);
                add(portal, "/admin/keys", "Keys", "keys", true);
            }
        }
        Nav { links, current }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(nav: &Nav) -> Vec<&'static str> {
        nav.links.iter().map(|l| l.id).collect()
    }

    #[test]
    fn console_links_only_for_the_roles_that_use_them() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let portal = Some("https://gw.test/");
        let user = Nav::new(portal, "https://id.test", &[], "home");
        assert_eq!(
            ids(&user),
            [
                "home",
                "documents",
                "upload",
                "ask",
                "account",
                "email",
                "password",
                "sessions",
                "portal-sessions"
            ]
        );
        let auditor = Nav::new(portal, "https://id.test", &roles(&["auditor"]), "logs");
        assert!(ids(&auditor).contains(&"logs") && !ids(&auditor).contains(&"users"));
        let admin = Nav::new(portal, "https://id.test", &roles(&["admin"]), "keys");
        assert!(ids(&admin).ends_with(&["logs", "dashboard", "users", "clients", "keys"]));
        let html = admin.render().unwrap();
        assert!(
            html.contains(r#"href="https://gw.test/admin/keys" id="nav-keys" aria-current="page""#)
        );
        assert!(html.contains(r#"href="https://id.test/account""#));
        let alone = Nav::new(None, "https://id.test", &roles(&["admin"]), "account");
        assert_eq!(ids(&alone), ["account", "email", "password", "sessions"]);
    }
}
