//! Read-only views of what the core hands to hooks: `Identity` (authenticate), `Session` (rpc),
//! `AuthorizeRequest` and `HandshakeInfo`. Each wraps the core value; list and dict attributes
//! are built fresh at each access, so a handler cannot change what the core holds.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use wsguard::Identity;
use wsguard::hooks::{AuthorizeRequest, ChannelAction, HandshakeInfo};

use crate::json;

fn claims<'py>(py: Python<'py>, identity: &Identity) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in &identity.claims.to_map() {
        dict.set_item(k, json::to_py(py, v)?)?;
    }
    Ok(dict)
}

/// The verified identity of a connecting client (the token's claims, never the token).
#[pyclass(name = "Identity", module = "wsguard._native", frozen)]
pub(crate) struct PyIdentity {
    pub(crate) identity: Arc<Identity>,
}

#[pymethods]
impl PyIdentity {
    /// The `sub` claim.
    #[getter]
    fn subject(&self) -> &str {
        &self.identity.subject
    }
    /// Roles from `auth.roles_claim`.
    #[getter]
    fn roles<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.identity.roles)
    }
    /// Scopes from `auth.scopes_claim`.
    #[getter]
    fn scopes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.identity.scopes)
    }
    /// Every claim of the token.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        claims(py, &self.identity)
    }
    /// `exp`, seconds since the Unix epoch.
    #[getter]
    fn expires_at(&self) -> u64 {
        self.identity.expires_at
    }
    /// `iat`, when present.
    #[getter]
    fn issued_at(&self) -> Option<u64> {
        self.identity.issued_at
    }
    /// `jti`, when present.
    #[getter]
    fn token_id(&self) -> Option<&str> {
        self.identity.token_id.as_deref()
    }
    fn __repr__(&self) -> String {
        format!("Identity(subject={:?})", self.identity.subject)
    }
}

/// A connected session: its id and verified identity.
#[pyclass(name = "Session", module = "wsguard._native", frozen)]
pub(crate) struct PySession {
    pub(crate) session_id: u64,
    pub(crate) identity: Arc<Identity>,
}

#[pymethods]
impl PySession {
    /// The server-assigned session id (for `Server.disconnect(session_id=...)`).
    #[getter]
    fn session_id(&self) -> u64 {
        self.session_id
    }
    /// The `sub` claim.
    #[getter]
    fn subject(&self) -> &str {
        &self.identity.subject
    }
    /// Roles from `auth.roles_claim`.
    #[getter]
    fn roles<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.identity.roles)
    }
    /// Scopes from `auth.scopes_claim`.
    #[getter]
    fn scopes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.identity.scopes)
    }
    /// Every claim of the session's token.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        claims(py, &self.identity)
    }
    /// `exp` of the session's token, seconds since the Unix epoch.
    #[getter]
    fn expires_at(&self) -> u64 {
        self.identity.expires_at
    }
    /// `jti` of the session's token, when present.
    #[getter]
    fn token_id(&self) -> Option<&str> {
        self.identity.token_id.as_deref()
    }
    fn __repr__(&self) -> String {
        format!("Session(session_id={}, subject={:?})", self.session_id, self.identity.subject)
    }
}

/// What the `authenticate` hook sees of the handshake.
#[pyclass(name = "HandshakeInfo", module = "wsguard._native", frozen)]
pub(crate) struct PyHandshakeInfo {
    info: HandshakeInfo,
}

impl From<HandshakeInfo> for PyHandshakeInfo {
    fn from(info: HandshakeInfo) -> Self {
        PyHandshakeInfo { info }
    }
}

#[pymethods]
impl PyHandshakeInfo {
    /// The resolved client IP.
    #[getter]
    fn client_ip(&self) -> String {
        self.info.client_ip.to_string()
    }
    /// The `Origin` header, when present.
    #[getter]
    fn origin(&self) -> Option<&str> {
        self.info.origin.as_deref()
    }
    /// The `User-Agent` header, when present.
    #[getter]
    fn user_agent(&self) -> Option<&str> {
        self.info.user_agent.as_deref()
    }
    fn __repr__(&self) -> String {
        format!("HandshakeInfo(client_ip='{}', origin={:?})", self.info.client_ip, self.info.origin)
    }
}

/// The question put to the `authorize` hook: may `session` perform `action` on `channel`?
#[pyclass(name = "AuthorizeRequest", module = "wsguard._native", frozen)]
pub(crate) struct PyAuthorizeRequest {
    session: Py<PySession>,
    action: ChannelAction,
    channel: String,
}

impl PyAuthorizeRequest {
    pub(crate) fn new(py: Python<'_>, request: AuthorizeRequest) -> PyResult<Self> {
        let session = Py::new(py, PySession { session_id: request.session_id, identity: request.identity })?;
        Ok(PyAuthorizeRequest { session, action: request.action, channel: request.channel })
    }
}

#[pymethods]
impl PyAuthorizeRequest {
    /// The session asking.
    #[getter]
    fn session(&self, py: Python<'_>) -> Py<PySession> {
        self.session.clone_ref(py)
    }
    /// `"subscribe"`, `"publish"` or `"history"`.
    #[getter]
    fn action(&self) -> &'static str {
        match self.action {
            ChannelAction::Subscribe => "subscribe",
            ChannelAction::Publish => "publish",
            ChannelAction::History => "history",
        }
    }
    /// The channel (already validated by the core).
    #[getter]
    fn channel(&self) -> &str {
        &self.channel
    }
    fn __repr__(&self) -> String {
        format!("AuthorizeRequest(action='{}', channel={:?})", self.action(), self.channel)
    }
}
