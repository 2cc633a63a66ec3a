//! Where a request's credentials are: a bearer token in `Authorization`, the token cookie, or
//! `?access_token=` (EventSource cannot set headers), or a service key in `X-Service-Key`;
//! [`redact`] removes the query token from anything logged.

use axum::http::HeaderMap;

use super::principal::AuthError;

/// Where a request's token was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer` (or `X-Service-Key`): a page of another site cannot send it.
    Header,
    /// The token cookie: a browser sends it with any request to the gateway, also one a
    /// page of another site makes, so state-changing requests check their origin.
    Cookie,
    /// The query's `access_token`.
    Query,
}

/// Where the credentials [`token`] would take are: None when there are none.
pub fn source(headers: &HeaderMap, query_token: Option<&str>, cookie: &str) -> Option<Source> {
    if headers.contains_key("x-service-key") {
        return Some(Source::Header);
    }
    located(headers, query_token, cookie).ok().map(|(_, s)| s)
}

/// The token of a request: `Authorization: Bearer`, then the `cookie`, then the query's
/// `access_token` (as [`from_query`] finds it); an error when there is none.
pub fn token(headers: &HeaderMap, query_token: Option<&str>, cookie: &str) -> Result<String, AuthError> {
    located(headers, query_token, cookie).map(|(t, _)| t)
}

fn located(headers: &HeaderMap, query_token: Option<&str>, cookie: &str) -> Result<(String, Source), AuthError> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Ok((t.trim().to_owned(), Source::Header));
        }
    }
    for header in headers.get_all(axum::http::header::COOKIE) {
        for part in header.to_str().unwrap_or_default().split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == cookie && !v.is_empty() {
                    return Ok((v.to_owned(), Source::Cookie));
                }
            }
        }
    }
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return Ok((t.to_owned(), Source::Query));
    }
    Err(AuthError::Missing(cookie.to_owned()))
}

/// The `access_token` of a raw query string, decoded.
pub fn from_query(query: Option<&str>) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, v)| k == "access_token" && !v.is_empty())
        .map(|(_, v)| v)
}

/// The name of the service key `given` is, comparing every key in constant time: timing tells
/// nothing about which matched.
pub(crate) fn service_key<'a>(given: &str, keys: &'a [(String, String)]) -> Option<&'a str> {
    let mut found = None;
    for (name, key) in keys {
        if ct_eq(given.as_bytes(), key.as_bytes()) {
            found = Some(name.as_str());
        }
    }
    found
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request target with any `access_token` or `ticket` value replaced by `REDACTED`: for every log line
/// and label that could carry a URL.
pub fn redact(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((key @ ("access_token" | "ticket"), _)) => format!("{key}=REDACTED"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}
