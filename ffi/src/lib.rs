//! C ABI over the wsguard core: `libwsguard.so` / `libwsguard.a` and the generated
//! `include/wsguard.h` (cbindgen, `ffi/cbindgen.toml`; the API conventions are in the header's
//! preamble and in `ffi/README.md`).
//!
//! A thin adapter, per STYLE.md: each export checks and converts its arguments (`boundary`),
//! calls one core function and converts the result (`result`). It owns no behaviour: defaults,
//! validation, time boxes and every security check stay in the core. What it must not do: let a
//! panic or a Rust error cross into C, write an out-parameter on failure, or call a C callback
//! on a runtime worker thread where it could stall connections.
//!
//! `unsafe` is confined to dereferencing what C hands in (and calling C back); every block says
//! why it holds.
#![allow(unsafe_code)]

// Declaration order is the order of the generated header: codes and errors, then the objects
// in the order a host meets them.
mod result;

mod boundary;

mod config;

mod server;

mod bans;

mod sessions;

mod reads;

mod hooks;

mod rpc;

pub use bans::{
    wsg_server_ban_ip, wsg_server_ban_user, wsg_server_bans_json, wsg_server_lift_ban_ip, wsg_server_lift_ban_user,
};
pub use boundary::{wsg_str, wsg_string_free};
pub use config::{wsg_config, wsg_config_check, wsg_config_free, wsg_config_from_file, wsg_config_from_text};
pub use hooks::{
    WSG_CHANNEL_ACTION_HISTORY, WSG_CHANNEL_ACTION_PUBLISH, WSG_CHANNEL_ACTION_SUBSCRIBE, WSG_DECISION_ALLOW,
    WSG_DECISION_DENY, wsg_authenticate_answer, wsg_authenticate_answer_set_json, wsg_authenticate_callback,
    wsg_authorize_callback, wsg_authorize_request, wsg_channel_action, wsg_decision, wsg_event_callback, wsg_handshake,
    wsg_hooks, wsg_rpc_callback, wsg_user_data_drop_callback,
};
pub use reads::{wsg_server_history_json, wsg_server_presence_json, wsg_server_presence_stats_json};
pub use result::*;
pub use rpc::{
    wsg_rpc_call, wsg_rpc_call_fail, wsg_rpc_call_free, wsg_rpc_call_identity_json, wsg_rpc_call_method,
    wsg_rpc_call_payload_json, wsg_rpc_call_respond, wsg_rpc_call_session_id, wsg_rpc_call_subject,
};
pub use server::{
    wsg_server, wsg_server_disconnect_session, wsg_server_disconnect_user, wsg_server_free, wsg_server_local_port,
    wsg_server_publish, wsg_server_reload, wsg_server_revoke_issued_before, wsg_server_revoke_jti,
    wsg_server_revoke_sub, wsg_server_start, wsg_server_stats_json, wsg_server_stop,
};
pub use sessions::{
    wsg_server_channels_json, wsg_server_disconnect_with, wsg_server_send, wsg_server_sessions_json,
    wsg_server_subscribe, wsg_server_unsubscribe, wsg_target,
};
