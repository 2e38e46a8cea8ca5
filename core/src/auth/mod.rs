//! Authentication: JWT verification against pinned algorithms and configured keys, and the
//! `Identity` a session carries. This area decides *who*; it never decides what a session may do.

mod config;
mod identity;
mod jwks;
mod keys;
mod mint;
mod revocation;
mod verify;

pub(crate) use config::check_fetch_url;
pub use config::{AuthConfig, IssuerConfig, JwtAlgorithm, KeyFamily, TokenSource};
pub use identity::{Claims, Identity};
pub(crate) use jwks::{JwksRuntime, tls_config};
pub use keys::KeyMaterial;
pub use mint::{MintError, SigningKey, TokenRequest, mint_token};
pub(crate) use revocation::{JtiCache, JtiRefusal, JtiSpend, RevocationBroadcast, UsedJtis};
pub use revocation::{Revocation, RevocationList};
pub(crate) use verify::now_secs;
pub use verify::{TokenError, TokenVerifier};
