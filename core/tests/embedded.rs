//! `EmbeddedServer` from a plain (non-async) host thread, as the C, Python and Node bindings use it.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use wsguard::auth::KeyMaterial;
use wsguard::{Config, EmbeddedServer, NoHooks};

fn config() -> Config {
    Config::from_toml_str(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [observability]
        metrics_listen = ""
        [auth]
        hmac_secret_env = "UNUSED_BECAUSE_KEY_MATERIAL_IS_GIVEN"
        issuer = "https://issuer.test"
        audience = "wsguard"
        [[channels]]
        pattern = "news"
        subscribe = {}
        "#,
    )
    .expect("config")
}

fn secret() -> Option<KeyMaterial> {
    Some(KeyMaterial::HmacSecret(b"0123456789abcdef0123456789abcdef".to_vec()))
}

#[test]
fn starts_on_its_own_runtime_and_stops_idempotently() {
    let mut server = EmbeddedServer::start(config(), Arc::new(NoHooks), secret(), 1).expect("start");
    assert_ne!(server.local_addr().port(), 0);
    std::net::TcpStream::connect(server.local_addr()).expect("listening");
    assert_eq!(server.handle().publish("news", &serde_json::json!({"a": 1})).expect("publish"), 0);
    server.stop(Some(Duration::from_millis(100))).expect("stop");
    server.stop(None).expect("second stop is a no-op");
    assert!(server.handle().publish("news", &serde_json::json!({})).is_err());
}

#[test]
fn dropping_a_running_server_does_not_block() {
    let server = EmbeddedServer::start(config(), Arc::new(NoHooks), secret(), 1).expect("start");
    let addr = server.local_addr();
    drop(server);
    // The listener is released promptly: a new bind on the same port eventually succeeds.
    let rebound = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        std::net::TcpListener::bind(addr).is_ok()
    });
    assert!(rebound);
}

#[test]
fn bad_config_is_reported_without_starting() {
    let mut config = config();
    config.auth.issuer = None;
    let err = EmbeddedServer::start(config, Arc::new(NoHooks), secret(), 1).err().expect("refused");
    assert_eq!(err.code(), wsguard::ErrorCode::ConfigInvalid);
    assert!(err.to_string().contains("auth.issuer"), "{err}");
}
