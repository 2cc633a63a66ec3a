//! Which page a browser request comes from: a WebSocket upgrade and a cookie-authenticated
//! state-changing request are refused unless their `Origin` is the gateway's own (the `Host`
//! it was reached at) or configured in `allowed_origins`. A request without `Origin` is not
//! a browser's cross-site one (browsers send it on both) and passes.

use axum::http::HeaderMap;

/// Checks one `allowed_origins` entry: `*`, or `scheme://host[:port]` with nothing after.
pub fn check_allowed(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    match split(origin) {
        Some((_, host)) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(()),
        _ => Err(format!(
            "{origin:?} is not an origin: scheme://host[:port] (no path), or *"
        )),
    }
}

/// `http`/`https` and the authority of an origin, lowercased.
fn split(origin: &str) -> Option<(&str, &str)> {
    let (scheme, host) = origin.split_once("://")?;
    matches!(scheme, "http" | "https").then_some((scheme, host))
}

/// `host` without the scheme's default port.
fn without_default_port<'a>(scheme: &str, host: &'a str) -> &'a str {
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default).unwrap_or(host)
}

/// Whether the request's `Origin` (if any) may act: the host the request was sent to
/// (`X-Forwarded-Host` too when `forwarded` is trusted), or one of `allowed`. Err: the origin
/// that may not, for the error message.
pub fn permitted(headers: &HeaderMap, allowed: &[String], forwarded: bool) -> Result<(), String> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(&origin)) {
        return Ok(());
    }
    if let Some((scheme, host)) = split(&origin) {
        let origin_host = without_default_port(scheme, host);
        let mut hosts: Vec<&str> = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .into_iter()
            .collect();
        if forwarded {
            hosts.extend(headers.get("x-forwarded-host").and_then(|h| h.to_str().ok()));
        }
        if hosts
            .iter()
            .any(|h| without_default_port(scheme, &h.trim().to_ascii_lowercase()) == origin_host)
        {
            return Ok(());
        }
    }
    Err(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_host_and_configured_origins_pass_others_do_not() {
        let none: &[String] = &[];
        assert!(permitted(&headers(&[("host", "gw:8080")]), none, false).is_ok());
        assert!(permitted(
            &headers(&[("host", "gw:8080"), ("origin", "http://gw:8080")]),
            none,
            false
        )
        .is_ok());
        assert!(permitted(
            &headers(&[("host", "ops.example.com"), ("origin", "https://ops.example.com")]),
            none,
            false
        )
        .is_ok());
        assert!(permitted(
            &headers(&[("host", "ops.example.com:443"), ("origin", "https://OPS.example.com")]),
            none,
            false
        )
        .is_ok());
        assert_eq!(
            permitted(
                &headers(&[("host", "gw:8080"), ("origin", "https://evil.example")]),
                none,
                false
            ),
            Err("https://evil.example".into())
        );
        assert!(permitted(&headers(&[("host", "gw:8080"), ("origin", "null")]), none, false).is_err());
        // A port is part of the origin.
        assert!(permitted(
            &headers(&[("host", "gw:8080"), ("origin", "http://gw:9090")]),
            none,
            false
        )
        .is_err());
        let allowed = vec!["https://panel.example.com".to_owned()];
        assert!(permitted(
            &headers(&[("host", "gw"), ("origin", "https://panel.example.com")]),
            &allowed,
            false
        )
        .is_ok());
        assert!(permitted(
            &headers(&[("host", "gw"), ("origin", "https://x")]),
            &["*".into()],
            false
        )
        .is_ok());
        // Behind a trusted proxy the host the browser saw may be in X-Forwarded-Host.
        let proxied = headers(&[
            ("host", "gateway:8080"),
            ("x-forwarded-host", "ops.example.com"),
            ("origin", "https://ops.example.com"),
        ]);
        assert!(permitted(&proxied, none, true).is_ok());
        assert!(permitted(&proxied, none, false).is_err());
    }

    #[test]
    fn configured_origins_are_checked() {
        assert!(check_allowed("https://a.example:8443").is_ok());
        assert!(check_allowed("*").is_ok());
        for bad in ["a.example", "https://a.example/path", "ftp://a", "https://"] {
            assert!(check_allowed(bad).is_err(), "{bad}");
        }
    }
}
