//! The shared fixtures of `tests/fixtures/` run from Rust: the same data files drive the C,
//! Python and Node tests, so a host that answers differently fails its own suite.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::{AUDIENCE, ISSUER, SECRET, Setup, TempDir, describe, now_secs, request, sign};
use wsguard::hooks::{AuthenticateAnswer, HandshakeInfo, HookFuture, RpcCall, RpcError};
use wsguard::host::ConfigInput;
use wsguard::{Hooks, Identity};

fn fixture(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Answers `authenticate` with one fixture answer (parsed by the core's one parser, as the
/// bindings do), and `whoami` with the identity it is handed.
struct FixtureHooks {
    answer: Value,
}

impl Hooks for FixtureHooks {
    fn authenticate(&self, _info: HandshakeInfo, _identity: Arc<Identity>) -> HookFuture<AuthenticateAnswer> {
        let answer = AuthenticateAnswer::from_json(self.answer.clone())
            .unwrap_or_else(|invalid| AuthenticateAnswer::Deny(invalid.to_string()));
        Box::pin(std::future::ready(answer))
    }

    fn rpc(&self, call: RpcCall) -> HookFuture<Result<Value, RpcError>> {
        let identity = &call.identity;
        let answer = json!({"roles": identity.roles, "scopes": identity.scopes, "claims": identity.claims});
        Box::pin(std::future::ready(Ok(answer)))
    }
}

#[tokio::test]
async fn authenticate_answers_mean_the_same_in_every_host() {
    let fixture = fixture("authenticate_answers.json");
    let method = fixture["rpc_method"].as_str().expect("fixture value");
    let mut claims = fixture["token_claims"].clone();
    let now = now_secs();
    claims.as_object_mut().expect("fixture value").extend(
        [("iss", json!(ISSUER)), ("aud", json!(AUDIENCE)), ("iat", json!(now)), ("exp", json!(now + 300))]
            .map(|(k, v)| (k.to_string(), v)),
    );
    let token = sign(jsonwebtoken::Algorithm::HS256, SECRET, &claims);
    for case in fixture["cases"].as_array().expect("fixture value") {
        let name = case["name"].as_str().expect("fixture value");
        let expect = &case["expect"];
        let server = Setup::new()
            .extra(&format!("[[rpc]]\nmethod = \"{method}\"\n"))
            .hooks(Arc::new(FixtureHooks { answer: case["answer"].clone() }))
            .start()
            .await;
        let connected = server.try_ws(&support::Connect::new().bearer(&token)).await;
        if expect["accepted"] == json!(false) {
            let error = connected.err().unwrap_or_else(|| panic!("{name}: accepted"));
            let text = describe(&error);
            let status = expect["status"].as_u64().expect("fixture value");
            let code = expect["code"].as_str().expect("fixture value");
            assert!(text.starts_with(&format!("HTTP {status}")), "{name}: {text}");
            assert!(text.contains(&format!("\"{code}\"")), "{name}: {text}");
            continue;
        }
        let (mut ws, _) = connected.unwrap_or_else(|e| panic!("{name}: refused: {}", describe(&e)));
        let reply = request(&mut ws, &json!({"action": "rpc", "id": 1, "method": method})).await;
        let identity = &reply["payload"];
        assert_eq!(identity["roles"], expect["roles"], "{name}: {reply}");
        assert_eq!(identity["scopes"], expect["scopes"], "{name}: {reply}");
        for (claim, value) in expect["claims"].as_object().expect("fixture value") {
            assert_eq!(&identity["claims"][claim], value, "{name}: claim {claim}");
        }
        for claim in expect["absent_claims"].as_array().expect("fixture value") {
            assert!(
                identity["claims"].get(claim.as_str().expect("fixture value")).is_none(),
                "{name}: claim {claim} present"
            );
        }
    }
}

#[test]
fn config_mistakes_get_the_same_code_in_every_host() {
    let dir = TempDir::new();
    let secret_file = dir.write("hmac.secret", SECRET);
    let secret_file = secret_file.to_str().expect("fixture value");
    for case in fixture("config_errors.json")["cases"].as_array().expect("fixture value") {
        let name = case["name"].as_str().expect("fixture value");
        let input = match case["input"].as_str().expect("fixture value") {
            "value" => {
                let text = case["config"].to_string().replace("{secret_file}", secret_file);
                ConfigInput::Text(text)
            }
            "text" => ConfigInput::text_or_path(case["text"].as_str().expect("fixture value")),
            "path" => ConfigInput::Path(case["path"].as_str().expect("fixture value").into()),
            other => panic!("{name}: unknown input {other}"),
        };
        let error = input.load().err().unwrap_or_else(|| panic!("{name}: loaded"));
        assert_eq!(error.code().name(), case["code"].as_str().expect("fixture value"), "{name}: {error}");
        for path in case["paths"].as_array().expect("fixture value") {
            assert!(error.to_string().contains(path.as_str().expect("fixture value")), "{name}: {path} not in {error}");
        }
    }
}
