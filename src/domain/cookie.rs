//! The refresh cookie of browser clients, and the CSRF rule for the
//! requests it authenticates, as pure decisions: what `Set-Cookie` says,
//! which cookie a request carries, whether a request may use it.

use std::time::Duration;

/// `SameSite` of the refresh cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    fn attribute(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// How the refresh cookie is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePolicy {
    pub enabled: bool,
    /// The refresh token travels in the cookie only, never in JSON.
    pub only: bool,
    pub same_site: SameSite,
    pub secure: bool,
    /// The refresh-token lifetime.
    pub max_age: Duration,
}

/// Where the cookie is sent without `Secure` (only `/graphql` reads it).
/// A `Secure` cookie is `__Host-` and so must say `Path=/`.
pub const COOKIE_PATH: &str = "/graphql";
/// The header every cookie-authenticated request must carry (a cross-site
/// form or image cannot send it; a cross-site script needs CORS for it).
pub const CSRF_HEADER: &str = "x-requested-with";

impl CookiePolicy {
    /// `__Host-` where the cookie is `Secure`: browsers then refuse it
    /// with a `Domain` (so a sibling subdomain cannot plant one of this
    /// name), without `Secure`, or from plain HTTP. That prefix needs
    /// `Path=/`; without `Secure` the cookie is kept to `/graphql`.
    pub fn name(&self) -> &'static str {
        if self.secure {
            "__Host-authql_refresh"
        } else {
            "authql_refresh"
        }
    }

    fn attributes(&self, max_age: u64) -> String {
        format!(
            "; HttpOnly{}; SameSite={}; Path={}; Max-Age={max_age}",
            if self.secure { "; Secure" } else { "" },
            self.same_site.attribute(),
            if self.secure { "/" } else { COOKIE_PATH },
        )
    }

    /// The `Set-Cookie` value that stores `token`.
    pub fn set(&self, token: &str) -> String {
        format!(
            "{}={token}{}",
            self.name(),
            self.attributes(self.max_age.as_secs())
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn expire(&self) -> String {
        format!("{}={}", self.name(), self.attributes(0))
    }

    /// The refresh token among `Cookie` header values, if exactly one
    /// cookie has our name (two mean one was planted: neither is used).
    pub fn read<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let mut ours = cookie_headers
            .into_iter()
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == self.name())
            .map(|(_, value)| value.trim_matches('"').to_owned());
        let first = ours.next()?;
        if ours.next().is_some() {
            return None;
        }
        Some(first).filter(|value| !value.is_empty())
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOrigin {
    /// `X-Requested-With` was sent (any value).
    pub custom_header: bool,
    pub origin: Option<String>,
    pub sec_fetch_site: Option<String>,
    /// The `Host` the request was sent to.
    pub host: Option<String>,
    /// authql's own origin (`AUTHQL_PUBLIC_URL`'s scheme and host), when
    /// configured: behind a proxy `Host` may be the proxy's upstream name.
    pub own_origin: Option<String>,
}

/// Why a cookie-authenticated request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    MissingHeader,
    ForeignOrigin,
}

impl CsrfRefusal {
    pub fn message(self) -> &'static str {
        match self {
            CsrfRefusal::MissingHeader => {
                "requests authenticated by the refresh cookie must send an X-Requested-With header"
            }
            CsrfRefusal::ForeignOrigin => {
                "requests authenticated by the refresh cookie must come from this origin or one of AUTHQL_CORS_ORIGINS"
            }
        }
    }
}

/// Whether a request may be authenticated by the refresh cookie: it sends
/// the custom header, and it comes from the server's own origin or an
/// allowed one (by `Origin`; a browser that says `Sec-Fetch-Site`
/// cross-site or same-site must name an allowed `Origin`).
pub fn check_csrf(request: &RequestOrigin, allowed: &[String]) -> Result<(), CsrfRefusal> {
    if !request.custom_header {
        return Err(CsrfRefusal::MissingHeader);
    }
    let allowed_origin = |origin: &str| {
        allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    let own_origin = |origin: &str| match &request.own_origin {
        Some(own) => own.eq_ignore_ascii_case(origin),
        None => {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            host.is_some() && host == request.host.as_deref()
        }
    };
    let foreign_site = matches!(
        request.sec_fetch_site.as_deref(),
        Some("cross-site" | "same-site")
    );
    match request.origin.as_deref() {
        Some(origin) if allowed_origin(origin) => Ok(()),
        Some(origin) if own_origin(origin) && !foreign_site => Ok(()),
        Some(_) => Err(CsrfRefusal::ForeignOrigin),
        // No Origin: not a browser's cross-site request (browsers send
        // Origin on every cross-origin POST), unless it says it is.
        None if foreign_site => Err(CsrfRefusal::ForeignOrigin),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secure: bool) -> CookiePolicy {
        CookiePolicy {
            enabled: true,
            only: false,
            same_site: SameSite::Strict,
            secure,
            max_age: Duration::from_secs(30 * 86_400),
        }
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_kept_to_graphql() {
        assert_eq!(
            policy(true).set("tok"),
            "__Host-authql_refresh=tok; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=2592000"
        );
        assert_eq!(
            policy(false).expire(),
            "authql_refresh=; HttpOnly; SameSite=Strict; Path=/graphql; Max-Age=0"
        );
        let p = policy(true);
        assert_eq!(
            p.read(["a=1; __Host-authql_refresh=tok ; b=2"]).as_deref(),
            Some("tok")
        );
        assert_eq!(
            p.read(["authql_refresh=tok"]),
            None,
            "the unprefixed name is not ours"
        );
        assert_eq!(p.read(["__Host-authql_refresh="]), None);
        assert_eq!(
            p.read([
                "__Host-authql_refresh=mine",
                "__Host-authql_refresh=planted"
            ]),
            None,
            "two of ours: one was planted"
        );
    }

    #[test]
    fn csrf_needs_the_header_and_a_known_origin() {
        let allowed = vec!["https://app.example.com".to_owned()];
        let request = |header: bool, origin: Option<&str>, site: Option<&str>| RequestOrigin {
            custom_header: header,
            origin: origin.map(str::to_owned),
            sec_fetch_site: site.map(str::to_owned),
            host: Some("auth.example.com".into()),
            own_origin: None,
        };
        let check = |r: RequestOrigin| check_csrf(&r, &allowed);
        assert_eq!(
            check(request(false, None, None)),
            Err(CsrfRefusal::MissingHeader)
        );
        assert_eq!(check(request(true, None, None)), Ok(()));
        assert_eq!(
            check(request(
                true,
                Some("https://app.example.com"),
                Some("cross-site")
            )),
            Ok(())
        );
        assert_eq!(
            check(request(
                true,
                Some("https://auth.example.com"),
                Some("same-origin")
            )),
            Ok(())
        );
        assert_eq!(
            check(request(
                true,
                Some("https://evil.example"),
                Some("cross-site")
            )),
            Err(CsrfRefusal::ForeignOrigin)
        );
        assert_eq!(
            check(request(true, Some("https://evil.example"), None)),
            Err(CsrfRefusal::ForeignOrigin)
        );
        assert_eq!(
            check(request(true, None, Some("cross-site"))),
            Err(CsrfRefusal::ForeignOrigin)
        );
        assert_eq!(
            check(request(true, Some("null"), None)),
            Err(CsrfRefusal::ForeignOrigin)
        );
        // Its own origin, but the browser says another site sent it.
        assert_eq!(
            check(request(
                true,
                Some("https://auth.example.com"),
                Some("cross-site")
            )),
            Err(CsrfRefusal::ForeignOrigin)
        );
        // Behind a proxy that rewrites Host: AUTHQL_PUBLIC_URL names it.
        let proxied = |origin: &str| RequestOrigin {
            host: Some("127.0.0.1:8080".into()),
            own_origin: Some("https://auth.example.com".into()),
            ..request(true, Some(origin), Some("same-origin"))
        };
        assert_eq!(check(proxied("https://auth.example.com")), Ok(()));
        assert_eq!(
            check(proxied("http://auth.example.com")),
            Err(CsrfRefusal::ForeignOrigin)
        );
    }
}
