//! Finds the bearer token in the configured sources, in the configured order. A token in a source
//! that is not configured is never read (the query string in particular: URLs are logged by every
//! proxy on the way).

use super::rejection::Rejection;
use super::request::{RequestHead, offered_subprotocols};
use crate::auth::TokenSource;
use crate::error::ErrorCode;

/// The subprotocol a wsguard v1 client offers and the server selects.
pub const SUBPROTOCOL: &str = "wsguard.v1";
/// Prefix of the subprotocol entry carrying the token (`bearer.<jwt>`).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// What the handshake learned about tokens and subprotocols.
#[derive(Debug)]
pub(crate) struct TokenSearch {
    pub(crate) token: Option<(String, TokenSource)>,
    /// Whether the response selects `wsguard.v1`.
    pub(crate) selects_subprotocol: bool,
}

pub(crate) fn find_token(
    head: &RequestHead,
    sources: &[TokenSource],
    cookie_name: &str,
) -> Result<TokenSearch, Rejection> {
    let offered = offered_subprotocols(head);
    let offers_v1 = offered.iter().any(|p| p == SUBPROTOCOL);
    let bearer_offer = offered.iter().find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX));
    if bearer_offer.is_some() && !offers_v1 {
        return Err(Rejection::new(ErrorCode::SubprotocolRequired, "bearer.<token> offered without wsguard.v1"));
    }
    let mut token = None;
    for source in sources {
        let found = match source {
            TokenSource::Header => head.single("authorization")?.and_then(|v| {
                let v = std::str::from_utf8(v).ok()?;
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string())
            }),
            TokenSource::Subprotocol => bearer_offer.map(str::to_string),
            TokenSource::Cookie => head.single("cookie")?.and_then(|v| {
                let v = std::str::from_utf8(v).ok()?;
                cookie::Cookie::split_parse(v)
                    .filter_map(Result::ok)
                    .find(|c| c.name() == cookie_name)
                    .map(|c| c.value().to_string())
            }),
            TokenSource::Query => head.query.as_deref().and_then(|q| {
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
            }),
        };
        if let Some(t) = found.filter(|t| !t.is_empty()) {
            token = Some((t, *source));
            break;
        }
    }
    Ok(TokenSearch { token, selects_subprotocol: offers_v1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(query: Option<&str>, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead::from_parts("GET", "/ws", query, headers)
    }

    const ALL: [TokenSource; 3] = [TokenSource::Header, TokenSource::Subprotocol, TokenSource::Cookie];

    #[test]
    fn sources_are_tried_in_order() {
        let h = head(None, &[("cookie", "a=1; wsguard_token=C"), ("authorization", "Bearer H")]);
        let found = find_token(&h, &ALL, "wsguard_token").expect("ok");
        assert_eq!(found.token, Some(("H".into(), TokenSource::Header)));
        let found = find_token(&h, &[TokenSource::Cookie, TokenSource::Header], "wsguard_token").expect("ok");
        assert_eq!(found.token, Some(("C".into(), TokenSource::Cookie)));
    }

    #[test]
    fn query_is_ignored_unless_listed() {
        let h = head(Some("access_token=Q"), &[]);
        assert_eq!(find_token(&h, &ALL, "t").expect("ok").token, None);
        let found = find_token(&h, &[TokenSource::Query], "t").expect("ok");
        assert_eq!(found.token, Some(("Q".into(), TokenSource::Query)));
    }

    #[test]
    fn subprotocol_token_needs_v1() {
        let h = head(None, &[("sec-websocket-protocol", "wsguard.v1, bearer.abc")]);
        let found = find_token(&h, &ALL, "t").expect("ok");
        assert_eq!(found.token, Some(("abc".into(), TokenSource::Subprotocol)));
        assert!(found.selects_subprotocol);
        let h = head(None, &[("sec-websocket-protocol", "bearer.abc")]);
        assert_eq!(find_token(&h, &ALL, "t").expect_err("no v1").code(), ErrorCode::SubprotocolRequired);
    }
}
