//! Who is calling and whether they may: the key (`Authorization: Bearer`), compared in constant
//! time against every configured key; the client certificate's subject under mutual TLS (the TLS
//! handshake already refused a client without a certificate chaining to `api.client_ca_file`);
//! and the per-caller request rate. The key itself is never logged, stored or echoed.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use subtle::ConstantTimeEq;

use super::reply::ApiError;
use super::settings::ApiKey;
use crate::error::ErrorCode;

/// The authenticated caller, as the audit trail names it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    /// The key's name (`default` for `api.key_env`), when a key was presented and matched.
    pub(crate) key: Option<String>,
    /// The client certificate's subject, under mutual TLS.
    pub(crate) subject: Option<String>,
}

impl Caller {
    /// What the rate limit is counted against, and the audit trail's `caller`: the key name, else
    /// the certificate subject, else empty (not authenticated).
    pub(crate) fn name(&self) -> String {
        match (&self.key, &self.subject) {
            (Some(key), _) => format!("key:{key}"),
            (None, Some(subject)) => format!("cert:{subject}"),
            (None, None) => String::new(),
        }
    }
}

/// Authentication and the per-caller rate.
pub(crate) struct Access {
    keys: Vec<ApiKey>,
    has_client_certs: bool,
    rates: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Access {
    pub(crate) fn new(keys: Vec<ApiKey>, has_client_certs: bool, per_sec: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_sec).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).map_or_else(|| Quota::per_second(burst), |q| q.allow_burst(burst));
        Access { keys, has_client_certs, rates: DefaultKeyedRateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// Authenticates the request. `subject`: the verified client certificate's subject, when the
    /// connection presented one. With keys configured a matching key is required (with or without
    /// a certificate); without keys the certificate alone authenticates.
    pub(crate) fn authenticate(&self, headers: &HeaderMap, subject: Option<&str>) -> Result<Caller, ApiError> {
        let subject = subject.map(str::to_owned);
        if self.keys.is_empty() {
            return match subject {
                Some(subject) if self.has_client_certs => Ok(Caller { key: None, subject: Some(subject) }),
                _ => Err(ApiError::new(ErrorCode::ApiUnauthorized, "a client certificate is required")),
            };
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(ApiError::new(ErrorCode::ApiUnauthorized, "missing Authorization: Bearer <key>"));
        };
        // Every key is compared (no early exit), each in constant time, as SHA-256 digests so
        // that neither the comparison nor its length reveals anything about a key.
        use sha2::Digest;
        let presented = sha2::Sha256::digest(presented.as_bytes());
        let mut matched: Option<&str> = None;
        for key in &self.keys {
            if bool::from(sha2::Sha256::digest(&key.secret)[..].ct_eq(&presented[..])) {
                matched = Some(&key.name);
            }
        }
        match matched {
            Some(name) => Ok(Caller { key: Some(name.to_string()), subject }),
            None => Err(ApiError::new(ErrorCode::ApiUnauthorized, "the key is not valid")),
        }
    }

    /// Counts one request against the caller's rate; refused with the seconds to wait.
    pub(crate) fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        self.count(&caller.name())
    }

    /// Counts a failed authentication against the client address's rate (a key cannot be guessed
    /// faster than the per-caller rate from one address); refused with the seconds to wait.
    pub(crate) fn admit_failure(&self, client_ip: std::net::IpAddr) -> Result<(), ApiError> {
        self.count(&format!("unauthenticated:{client_ip}"))
    }

    /// One request against `key`'s rate; refused with the whole seconds to wait.
    fn count(&self, key: &str) -> Result<(), ApiError> {
        self.rates.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// Forgets idle callers' rate state (bounded memory under many certificate subjects).
    pub(crate) fn forget_idle(&self) {
        self.rates.retain_recent();
    }
}

/// The subject of a DER client certificate in RFC 4514 form (`CN=ops,O=Example`), or its
/// SHA-256 fingerprint when it cannot be parsed (the TLS layer verified it anyway).
pub(crate) fn certificate_subject(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(der);
            format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}
