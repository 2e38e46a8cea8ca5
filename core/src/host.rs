//! What every embedding host (C, Python, Node) shares, decided once here so that the same input
//! gives the same result and the same error code in every language:
//!
//! - [`ConfigInput`] and [`ConfigInput::load`]: the one rule for a configuration handed over as
//!   text, a path or an already-parsed value, with every check (keys, secrets, key and
//!   certificate files) made at construction;
//! - [`ban_target`], [`revocation`], [`ban_duration`] and [`disconnect_target`]: the "exactly one
//!   of" argument rules of the control operations;
//! - [`target`], [`close`] and [`page_limit`]: the arguments of the server-side session
//!   operations and listings;
//! - [`history`], [`presence`] and [`presence_stats`]: the host's reads of a channel's history
//!   and presence, with their optional arguments and one result shape (the async presence
//!   reads waited for on the server's runtime, for hosts without an executor of their own);
//! - [`refuse_on_server_thread`]: the one check that a blocking call (start, stop) is not made
//!   from a server's own thread (a hook), where it would deadlock.
//!
//! Bindings convert their language's values to these inputs and map [`Error`] by its code; they
//! add no rule of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::Revocation;
use crate::config::Config;
use crate::error::Error;
use crate::history::Since;
use crate::limits::BanTarget;
use crate::presence::{PresencePage, PresenceStats};
use crate::server::{MAX_PAGE_LIMIT, ServerHandle, Target};
use crate::session::Disconnect;

/// A configuration as a host hands it over.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigInput {
    /// TOML or JSON text (JSON when the first non-blank character is `{`).
    Text(String),
    /// A file: `.json` is JSON, anything else TOML.
    Path(PathBuf),
    /// An already-parsed value (a Python mapping, a JavaScript object).
    Value(serde_json::Value),
}

impl ConfigInput {
    /// A host string that may be either text or a path: it is a path when it names an existing
    /// file, or when it cannot be configuration text at all (one line, no `=`, no table header,
    /// not JSON) — then "cannot read the file" (`config_file`) is the useful report, not a TOML
    /// syntax error about a file name.
    pub fn text_or_path(text: impl Into<String>) -> ConfigInput {
        let text = text.into();
        if names_a_file(&text) { ConfigInput::Path(PathBuf::from(text)) } else { ConfigInput::Text(text) }
    }

    /// Parses and fully checks the configuration, as a server start would: unknown keys, types,
    /// ranges, semantic rules, then secrets, keys and certificate files. Every problem at once.
    ///
    /// Errors: [`Error::Config`] with `config_syntax`, `config_invalid`, `config_file` or
    /// `config_secret_missing`.
    pub fn load(self) -> Result<Config, Error> {
        let config = self.parse()?;
        crate::server::check_config(&config)?;
        Ok(config)
    }

    /// Parses without reading the files or secrets the configuration names (what a reload's
    /// input goes through before the running server checks it).
    ///
    /// Errors: [`Error::Config`] with `config_syntax`, `config_invalid` or `config_file`.
    pub fn parse(self) -> Result<Config, Error> {
        let config = match self {
            ConfigInput::Text(text) => Config::from_text(&text)?,
            ConfigInput::Path(path) => Config::from_file(path)?,
            ConfigInput::Value(value) => Config::from_json_value(value)?,
        };
        Ok(config)
    }
}

fn names_a_file(text: &str) -> bool {
    if text.contains('\n') {
        return false;
    }
    let trimmed = text.trim_start();
    Path::new(text).is_file() || !(text.contains('=') || trimmed.starts_with('{') || trimmed.starts_with('['))
}

/// Whom a ban targets: exactly one of an IP (IPv4 or IPv6 text) or a user (`sub`); see
/// [`BanTarget::from_parts`].
///
/// Errors: [`Error::InvalidArgument`] for none or both, or an IP that does not parse.
pub fn ban_target(ip: Option<&str>, user: Option<&str>) -> Result<BanTarget, Error> {
    BanTarget::from_parts(ip, user)
}

/// A ban's length from seconds.
///
/// Errors: [`Error::InvalidArgument`] for a negative, NaN or infinite number, or one too large
/// to add to the clock (more than 100 years).
pub fn ban_duration(secs: f64) -> Result<Duration, Error> {
    const LONGEST_SECS: f64 = 100.0 * 365.0 * 86_400.0;
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if secs <= LONGEST_SECS => Ok(duration),
        _ => Err(Error::InvalidArgument(format!(
            "a ban lasts a finite number of seconds between 0 and {LONGEST_SECS}, not {secs}"
        ))),
    }
}

/// What a revocation revokes: exactly one of a `jti`, a subject or a time; see
/// [`Revocation::from_parts`].
///
/// Errors: [`Error::InvalidArgument`] for none or more than one.
pub fn revocation(jti: Option<&str>, sub: Option<&str>, issued_before: Option<u64>) -> Result<Revocation, Error> {
    Revocation::from_parts(jti, sub, issued_before)
}

/// Which sessions a disconnect closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectTarget {
    /// One session, by id.
    Session(u64),
    /// Every session of a user (`sub`).
    User(String),
}

/// Which sessions to disconnect: exactly one of a session id or a user.
///
/// Errors: [`Error::InvalidArgument`] for none or both.
pub fn disconnect_target(session_id: Option<u64>, user: Option<&str>) -> Result<DisconnectTarget, Error> {
    match (session_id, user) {
        (Some(id), None) => Ok(DisconnectTarget::Session(id)),
        (None, Some(user)) => Ok(DisconnectTarget::User(user.to_owned())),
        _ => Err(Error::InvalidArgument("a disconnect takes exactly one of session_id, user".into())),
    }
}

/// Which sessions a server-side operation (`send`, `disconnect_with`, `subscribe`,
/// `unsubscribe`) reaches: exactly one of a session id or a user; `node` (the node that holds
/// the session, `cluster.node_id`) only with a session id.
///
/// Errors: [`Error::InvalidArgument`] for none or both, an empty user, or a node without a session
/// id or empty.
pub fn target(session_id: Option<u64>, user: Option<&str>, node: Option<&str>) -> Result<Target, Error> {
    match (session_id, user, node) {
        (_, _, Some("")) => Err(Error::InvalidArgument("node must not be empty".into())),
        (None, Some(_), Some(_)) => Err(Error::InvalidArgument(
            "node goes with session_id only (a user's sessions are reached on every node)".into(),
        )),
        (Some(id), None, node) => Ok(Target::Session { id, node: node.map(str::to_owned) }),
        (None, Some(""), None) => Err(Error::InvalidArgument("user must not be empty".into())),
        (None, Some(user), None) => Ok(Target::User(user.to_owned())),
        _ => Err(Error::InvalidArgument("the operation takes exactly one of session_id, user".into())),
    }
}

/// Longest close reason, in bytes (RFC 6455 §5.5: a control frame's payload is at most 125
/// bytes, 2 of them the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Checks a close code and reason chosen by a host or an operator: the code one of
/// [`Disconnect::is_app_code`] (4000-4999 except the codes wsguard sends for its own reasons:
/// 4000, 4002, 4003, 4100, 4501), the reason at most [`MAX_CLOSE_REASON_BYTES`] bytes.
///
/// Errors: [`Error::InvalidArgument`].
pub fn close(code: u16, reason: &str) -> Result<(), Error> {
    if !Disconnect::is_app_code(code) {
        return Err(Error::InvalidArgument(format!(
            "close code {code} is not one a host may choose: 4000-4999 except 4000, 4002, 4003, 4100 and 4501"
        )));
    }
    if reason.len() > MAX_CLOSE_REASON_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a close reason is at most {MAX_CLOSE_REASON_BYTES} bytes of UTF-8, not {}",
            reason.len()
        )));
    }
    Ok(())
}

/// Entries in a listing page when the caller names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 100;

/// A listing's page size: `None` is [`DEFAULT_PAGE_LIMIT`]; otherwise 1 to
/// [`crate::server::MAX_PAGE_LIMIT`].
///
/// Errors: [`Error::InvalidArgument`] for 0 or more than the maximum.
pub fn page_limit(limit: Option<u64>) -> Result<usize, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(n) if (1..=MAX_PAGE_LIMIT as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::InvalidArgument(format!("limit is 1 to {MAX_PAGE_LIMIT}, not {n}"))),
    }
}

/// A page size as the core's reads take it: `None` is [`DEFAULT_PAGE_LIMIT`]; a number too
/// large for the platform saturates (and is refused by the read's own range check).
fn read_limit(limit: Option<u64>) -> usize {
    limit.map_or(DEFAULT_PAGE_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// A history position from its two parts: both (`since`) or neither (from the oldest or the
/// newest kept).
///
/// Errors: [`Error::InvalidArgument`] for one without the other.
pub fn history_since(offset: Option<u64>, epoch: Option<&str>) -> Result<Option<Since>, Error> {
    match (offset, epoch) {
        (Some(offset), Some(epoch)) => Ok(Some(Since { offset, epoch: epoch.to_owned() })),
        (None, None) => Ok(None),
        _ => Err(Error::InvalidArgument("a history position takes both offset and epoch, or neither".into())),
    }
}

/// [`ServerHandle::history`] for a host: `since_offset` and `since_epoch` together or not at
/// all ([`history_since`]), `limit` `None` for [`DEFAULT_PAGE_LIMIT`]. The page as JSON, the
/// same in every language: `{"offset", "epoch", "publications": [{"offset", "payload"}]}`
/// (`offset` and `epoch`: the channel's position when the page was read).
///
/// Errors: those of [`ServerHandle::history`], and [`Error::InvalidArgument`] for half a
/// position.
pub fn history(
    handle: &ServerHandle,
    channel: &str,
    since_offset: Option<u64>,
    since_epoch: Option<&str>,
    limit: Option<u64>,
    is_newest_first: bool,
) -> Result<serde_json::Value, Error> {
    let since = history_since(since_offset, since_epoch)?;
    let page = handle.history(channel, since.as_ref(), read_limit(limit), is_newest_first)?;
    let publications: Vec<serde_json::Value> =
        page.publications.into_iter().map(|p| serde_json::json!({"offset": p.offset, "payload": p.payload})).collect();
    Ok(serde_json::json!({
        "offset": page.position.offset,
        "epoch": &*page.position.epoch,
        "publications": publications,
    }))
}

/// [`ServerHandle::presence`] for a host without an async executor: waits on the server's
/// runtime (for Redis, when the cluster keeps presence there). `limit` `None` is
/// [`DEFAULT_PAGE_LIMIT`]; `after` is the previous page's `next`. Blocking: call it off the
/// server's own threads (a hook), where it is refused.
///
/// Errors: those of [`ServerHandle::presence`], and [`Error::WrongThread`].
pub fn presence(
    handle: &ServerHandle,
    channel: &str,
    limit: Option<u64>,
    after: Option<&str>,
) -> Result<PresencePage, Error> {
    refuse_on_server_thread("presence")?;
    handle.block_on(handle.presence(channel, read_limit(limit), after))
}

/// [`ServerHandle::presence_stats`] for a host without an async executor, as [`presence`].
///
/// Errors: those of [`ServerHandle::presence_stats`], and [`Error::WrongThread`].
pub fn presence_stats(handle: &ServerHandle, channel: &str) -> Result<PresenceStats, Error> {
    refuse_on_server_thread("presence_stats")?;
    handle.block_on(handle.presence_stats(channel))
}

/// Refuses a blocking call (`operation`: start, stop) made from a thread of a server's runtime
/// (a hook, an event handler), where it would wait for the very thread it runs on.
///
/// Errors: [`Error::WrongThread`].
pub fn refuse_on_server_thread(operation: &'static str) -> Result<(), Error> {
    if is_server_thread() { Err(Error::WrongThread(operation)) } else { Ok(()) }
}

/// True on a thread of a server's runtime (workers and its blocking pool, where hooks run).
pub fn is_server_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn text_and_paths_are_told_apart() {
        assert!(names_a_file("wsguard.toml"));
        assert!(names_a_file("/etc/wsguard/missing.json"));
        assert!(!names_a_file("[auth]\nissuer = \"x\""));
        assert!(!names_a_file("{\"auth\": {}}"));
        assert!(!names_a_file("server.listen = \"127.0.0.1:0\""));
    }

    #[test]
    fn session_operation_arguments_are_checked_once_here() {
        assert_eq!(target(Some(3), None, None).expect("a session"), Target::Session { id: 3, node: None });
        assert_eq!(
            target(Some(3), None, Some("b")).expect("a session elsewhere"),
            Target::Session { id: 3, node: Some("b".into()) }
        );
        assert_eq!(target(None, Some("alice"), None).expect("a user"), Target::User("alice".into()));
        for (id, user, node) in
            [(None, None, None), (Some(1), Some("a"), None), (None, Some("a"), Some("b")), (None, Some(""), None)]
        {
            assert_eq!(target(id, user, node).expect_err("refused").code(), ErrorCode::InvalidArgument);
        }
        assert!(close(4200, "maintenance").is_ok() && close(4001, "").is_ok());
        assert!(close(4000, "").is_err() && close(1000, "").is_err() && close(5000, "").is_err());
        assert!(close(4200, &"é".repeat(61)).is_ok(), "122 bytes");
        assert!(close(4200, &"x".repeat(124)).is_err());
        assert_eq!(page_limit(None).expect("default"), DEFAULT_PAGE_LIMIT);
        assert!(page_limit(Some(0)).is_err() && page_limit(Some(1001)).is_err() && page_limit(Some(1000)).is_ok());
        assert_eq!(history_since(None, None).expect("neither"), None);
        assert_eq!(history_since(Some(4), Some("e")).expect("both"), Some(Since { offset: 4, epoch: "e".into() }));
        for (offset, epoch) in [(Some(4), None), (None, Some("e"))] {
            assert_eq!(history_since(offset, epoch).expect_err("half").code(), ErrorCode::InvalidArgument);
        }
        assert_eq!((read_limit(None), read_limit(Some(7))), (DEFAULT_PAGE_LIMIT, 7));
    }

    #[test]
    fn a_missing_path_is_config_file_wherever_it_comes_from() {
        let error = ConfigInput::text_or_path("/no/such/wsguard.toml").load().expect_err("must be refused");
        assert_eq!(error.code(), ErrorCode::ConfigFile);
        let error = ConfigInput::Path("/no/such/wsguard.toml".into()).load().expect_err("must be refused");
        assert_eq!(error.code(), ErrorCode::ConfigFile);
    }

    #[test]
    fn exactly_one_of_rules() {
        assert_eq!(
            ban_target(Some("::1"), None).expect("fixture value"),
            BanTarget::Ip("::1".parse().expect("fixture value"))
        );
        assert_eq!(ban_target(None, Some("bob")).expect("fixture value"), BanTarget::User("bob".into()));
        for wrong in [ban_target(None, None), ban_target(Some("1.2.3.4"), Some("bob")), ban_target(Some("x"), None)] {
            assert_eq!(wrong.expect_err("must be refused").code(), ErrorCode::InvalidArgument);
        }
        assert_eq!(revocation(None, None, Some(5)).expect("fixture value"), Revocation::IssuedBefore(5));
        assert_eq!(
            revocation(Some("j"), Some("s"), None).expect_err("must be refused").code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(revocation(None, None, None).expect_err("must be refused").code(), ErrorCode::InvalidArgument);
        assert_eq!(disconnect_target(Some(3), None).expect("fixture value"), DisconnectTarget::Session(3));
        assert_eq!(
            disconnect_target(Some(3), Some("u")).expect_err("must be refused").code(),
            ErrorCode::InvalidArgument
        );
        for secs in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(ban_duration(secs).expect_err("must be refused").code(), ErrorCode::InvalidArgument, "{secs}");
        }
        assert_eq!(ban_duration(1.5).expect("fixture value"), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn blocking_calls_are_refused_on_a_server_thread() {
        assert_eq!(refuse_on_server_thread("stop").expect_err("must be refused").code(), ErrorCode::WrongThread);
        assert!(std::thread::spawn(|| refuse_on_server_thread("stop")).join().expect("fixture value").is_ok());
    }
}
